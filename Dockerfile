# teleread: one image for the county API, its one-shot jobs (migrate, init, bucket, backup)
# and the township gateway. docs/deploy.md: building, upgrading.

# OHIF's static build, fetched while the image is built (never at run time): npm pack of the
# pinned @ohif/app (the version of viewer_api/web/ohif.py); `teleread ohif install` below
# checks its checksum and installs it where the API serves /ohif/ from
FROM node:20-bookworm-slim AS ohif
WORKDIR /ohif
RUN npm pack @ohif/app@3.13.2 --silent

FROM python:3.11-slim-bookworm
# a fixed, non-root user; the directories the compose file mounts volumes on exist here,
# owned by it, so a fresh named volume takes that ownership (the gateway can write its spool)
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/teleread teleread \
 && install -d -o teleread -g teleread -m 0750 \
      /var/lib/teleread/spool /var/lib/teleread/backups /var/lib/teleread/county
WORKDIR /opt/teleread
# the CJK TrueType font the PDF reports embed (viewer_api/outputs/fonts.py)
RUN apt-get update && apt-get install -y --no-install-recommends fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/*
# the dependencies (and the build requirements) exactly as locked, every file sha256-checked;
# then teleread itself over them, resolving nothing
COPY requirements-runtime.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY storage ./storage
COPY worklist ./worklist
COPY gateway ./gateway
COPY viewer_api ./viewer_api
COPY teleread ./teleread
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
COPY --from=ohif /ohif/ohif-app-3.13.2.tgz /tmp/
RUN teleread ohif install --tarball /tmp/ohif-app-3.13.2.tgz && rm /tmp/ohif-app-3.13.2.tgz
COPY --chmod=0755 deploy/docker-entrypoint.sh /usr/local/bin/teleread-entrypoint
USER teleread
ENV TELEREAD_DATA_DIR=/var/lib/teleread PYTHONUNBUFFERED=1
EXPOSE 8000 11112
# secrets from /run/secrets into the environment, then `teleread ARGS`
ENTRYPOINT ["teleread-entrypoint"]
CMD ["api", "--host", "0.0.0.0"]
