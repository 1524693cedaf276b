# One image for the admin and every worker; compose.yaml (or `docker run IMAGE ceylon-worker ...`)
# picks the command. Build from the repo root: docker build -t ceylon-net .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install . \
    && useradd --system --create-home --uid 10001 ceylon

# Nothing here needs root: the admin binds ports above 1024, workers only connect out.
USER ceylon
WORKDIR /home/ceylon
# The admin's ROUTER (--port) and PUB (--pub-port, port+1) ports.
EXPOSE 8000 8001
CMD ["ceylon-admin", "--port", "8000"]
