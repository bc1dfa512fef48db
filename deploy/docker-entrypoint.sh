#!/bin/sh
# The image's entry point: `teleread ARGS...`, with each secret file whose name is an
# environment variable's (TELEREAD_API_SECRET_KEY, PGPASSWORD: compose's `target:`) put in
# that variable first. Compose mounts a service's secrets, and only those, under /run/secrets;
# values never appear in the compose file or in `docker inspect`. Other files there (lower
# case names: files a command reads by path, like `init`'s) are left alone.
set -eu
dir=${TELEREAD_SECRETS_DIR:-/run/secrets}
if [ -d "$dir" ]; then
  for file in "$dir"/*; do
    [ -f "$file" ] || continue
    name=${file##*/}
    case $name in
      "" | [0-9]* | *[!A-Z0-9_]*) continue ;;
    esac
    value=$(cat "$file") # without the trailing newline
    export "$name=$value"
  done
fi
exec teleread "$@"
