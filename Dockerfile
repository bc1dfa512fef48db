# teleread: one image for the county API and the township gateway.

# OHIF's static build, fetched while the image is built (never at run time): npm pack of the
# pinned @ohif/app (the version of viewer_api/web/ohif.py); `teleread ohif install` below
# checks its checksum and installs it where the API serves /ohif/ from
FROM node:20-bookworm-slim AS ohif
WORKDIR /ohif
RUN npm pack @ohif/app@3.13.2 --silent

FROM python:3.11-slim-bookworm
RUN useradd --system --create-home --home-dir /var/lib/teleread teleread
WORKDIR /opt/teleread
# the CJK TrueType font the PDF reports embed (viewer_api/outputs/fonts.py)
RUN apt-get update && apt-get install -y --no-install-recommends fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY storage ./storage
COPY worklist ./worklist
COPY gateway ./gateway
COPY viewer_api ./viewer_api
COPY teleread ./teleread
RUN pip install --no-cache-dir .
COPY --from=ohif /ohif/ohif-app-3.13.2.tgz /tmp/
RUN teleread ohif install --tarball /tmp/ohif-app-3.13.2.tgz && rm /tmp/ohif-app-3.13.2.tgz
USER teleread
ENV TELEREAD_DATA_DIR=/var/lib/teleread
EXPOSE 8000 11112
ENTRYPOINT ["teleread"]
CMD ["api", "--host", "0.0.0.0"]
