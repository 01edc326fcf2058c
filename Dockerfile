# The worker image: `arq worker.Settings` by default; `python -m worker ...` for the CLI.
FROM python:3.11-slim

# METRICS_HOST=0.0.0.0: the worker's /metrics, /healthz and /readyz (unauthenticated) listen on the
# container's own interfaces, so that a scraper on the container network reaches them; the
# worker's default outside a container is loopback (docs/security.md). Publish no port for it.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    METRICS_HOST=0.0.0.0

WORKDIR /app

# Dependencies first, pinned by the lock: this layer is rebuilt only when the lock changes. The lock
# has the `dashboard` and `tracing` extras: the image serves the dashboard and traces when the OTEL_*
# variables switch tracing on (docs/operations.md, Tracing).
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app

# The project itself, installed as a package (its SQL migrations and dashboard page are package
# data) into site-packages, owned by root and read-only to the worker's user; pip compiles it
# (faster starts and health checks). The sources are removed: the code runs from site-packages,
# as it does for anyone who installs the wheel. Its dependencies are the lock's, above.
COPY pyproject.toml README.md LICENSE /tmp/src/
COPY worker/ /tmp/src/worker/
COPY jobs/ /tmp/src/jobs/
COPY pgpool_client/ /tmp/src/pgpool_client/
RUN pip install --no-cache-dir --no-deps --compile /tmp/src && rm -rf /tmp/src

USER 10001:10001

# Passes while the worker is live (its consumer loop makes progress) and ready (PostgreSQL and
# Redis answer it), asked of its endpoint on METRICS_PORT; `arq --check worker.Settings` works too.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "worker", "health"]

CMD ["arq", "worker.Settings"]
