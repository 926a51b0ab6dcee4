# The connector's daemon in a container: `connector run /config/config.yaml`.
#   docker build -t client-keeper-connector .
#   docker run -v "$PWD/config.yaml:/config/config.yaml:ro" -v connector-data:/data --env-file .env client-keeper-connector
# The config is a volume (/config), the SQLite store lives in /data (or point `store:` at PostgreSQL,
# see compose.yaml). The health check asks the daemon's /healthz: set `metrics: {listen: "0.0.0.0:9108"}`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY bitrix ./bitrix
COPY onec ./onec
COPY binotel ./binotel
COPY sms ./sms
RUN pip install ".[postgres]" \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin connector \
    && mkdir -p /config /data \
    && chown connector:connector /data \
    && rm -rf /src

USER connector
WORKDIR /data
VOLUME ["/config", "/data"]
EXPOSE 9108
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=60s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
ENTRYPOINT ["connector", "run", "/config/config.yaml"]
