#!/usr/bin/env bash
# run-dotnet.sh PROJECT OUTDIR DLL [ARGS...]: builds PROJECT (Release) into OUTDIR when the build
# is missing or older than any source, under a lock so parallel callers build once, then runs it.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
project="$here/$1" out="$here/$2" dll="$here/$2/$3"
shift 3

newer() { find "$here/src" "$here/Directory.Build.props" "$here/Directory.Packages.props" \
  \( -name '*.cs' -o -name '*.csproj' -o -name '*.props' \) -newer "$dll" -print -quit 2>/dev/null; }

if [[ ! -f "$dll" || -n "$(newer)" ]]; then
  mkdir -p "$here/artifacts"
  (
    flock 9
    if [[ ! -f "$dll" || -n "$(newer)" ]]; then
      log="$(mktemp)"
      if ! dotnet build "$project" -c Release -o "$out" -nologo -v quiet >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "$(basename "$dll" .dll): build failed" >&2
        exit 3
      fi
      rm -f "$log"
      touch "$dll"
    fi
  ) 9>"$here/artifacts/.build-$(basename "$dll" .dll).lock"
fi

exec dotnet "$dll" "$@"
