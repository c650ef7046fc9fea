# The server with its embedded defaults: Postgres, speech and agent engines all run inside the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    VAR_DIR=/data
# glibc keeps a malloc arena per thread (two hold the server ~55 MiB smaller and flat over many calls);
# numpy's OpenBLAS would keep a thread per core, and the audio maths here is per frame and small.
ENV MALLOC_ARENA_MAX=2 OPENBLAS_NUM_THREADS=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent_bridge ./agent_bridge
COPY media ./media
COPY signaling ./signaling
COPY storage ./storage
COPY static ./static
COPY run.py ./
# The server runs as an unprivileged user that can write only to /data.
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin voice \
    && mkdir -p /data && chown voice:voice /data

# DEV_MODE stays off: set JWT_SECRET (at least 32 bytes) and DATABASE_URL (and the cloud engines' settings).
VOLUME ["/data"]
EXPOSE 8080
USER voice
CMD ["python", "run.py"]
