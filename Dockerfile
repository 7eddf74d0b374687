# One image for the worker and the ingest service (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
# Every runtime dependency pinned (constraints.txt, regenerated from a clean install by
# `make constraints`), so two builds of one commit install the same packages.
COPY pyproject.toml README.md constraints.txt ./
COPY mailstream ./mailstream
COPY connectors ./connectors
COPY streams ./streams
COPY schemas ./schemas
RUN pip install --no-cache-dir --constraint constraints.txt . \
    && useradd --system --uid 10001 --home-dir /var/lib/mailstream mailstream \
    && mkdir -p /var/lib/mailstream \
    && chown mailstream /var/lib/mailstream
ENV MAILSTREAM_DATA_DIR=/var/lib/mailstream
VOLUME /var/lib/mailstream
USER mailstream
ENTRYPOINT ["mailstream"]
