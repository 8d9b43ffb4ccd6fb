# Forge in a container: the same two set-up commands as on a laptop (make run; make test).
# The embedded models (Whisper base, the Piper voice) arrive as Python wheels, so the image
# starts and answers offline with no keys; configure OpenAI, Twilio, PostgreSQL and Redis with
# environment variables (.env.sample lists them all). The app listens on every interface here, so
# it starts only with a login: FORGE_APP_PASSWORD, or Streamlit's OIDC login in secrets.toml.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FORGE_DATA_DIR=/data FORGE_CACHE_DIR=/data/cache
RUN apt-get update \
 && apt-get install -y --no-install-recommends make ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . .
RUN make .venv/.runtime PYTHON=python3 && mkdir -p /data

VOLUME /data
# Streamlit app, sidecar (Twilio webhooks, media streams, devices), offline Realtime server.
EXPOSE 8501 8765 8766
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s CMD python3 -c \
  "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/ready', timeout=4)"
CMD ["make", "run", "BIND=0.0.0.0"]
