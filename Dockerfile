# Kota server image: gateway, ingest, indicators, db tools (and the simulator for the demo profile).
FROM python:3.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kota
COPY pyproject.toml constraints.txt README.md ./
COPY kota_cli kota_cli
COPY edge edge
COPY gateway gateway
COPY ingest ingest
COPY storage storage
COPY indicators indicators
COPY dashboards dashboards
COPY firmware_sim firmware_sim
RUN pip install --no-cache-dir -c constraints.txt '.[server]' && useradd --system --home /var/lib/kota kota
USER kota
ENTRYPOINT ["tini", "--", "kota"]
CMD ["--help"]
