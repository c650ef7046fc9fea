# The server with its embedded defaults: Postgres, speech and agent engines all run inside the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    VAR_DIR=/data \
    DEV_MODE=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent_bridge ./agent_bridge
COPY media ./media
COPY signaling ./signaling
COPY storage ./storage
COPY static ./static
COPY run.py ./
RUN pip install --no-cache-dir . && mkdir -p /data

# Production: set DEV_MODE=0, JWT_SECRET and DATABASE_URL (and the cloud engines' settings).
VOLUME ["/data"]
EXPOSE 8080
CMD ["python", "run.py"]
