#!/usr/bin/env bash
# Copies the pinned Apache Kafka jars from Maven Central (deploy/kafka/pom.xml) into $1/libs, once.
# Java 17 and Maven come from Debian when missing (as root), else the fixing command is printed.
set -euo pipefail
dest="$1"
here="$(cd "$(dirname "$0")/.." && pwd)"
stamp="$dest/.pom.sha256"
want="$(sha256sum "$here/kafka/pom.xml" | cut -d' ' -f1)"

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]}; install with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "installing ${need[*]} from Debian ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
java_major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
if [ "${java_major%%.*}" -lt 17 ] 2>/dev/null; then
  echo "Kafka 4 needs Java 17+, found ${java_major}; install with: apt-get install -y openjdk-17-jre-headless" >&2
  exit 1
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && ls "$dest"/libs/kafka_2.13-*.jar >/dev/null 2>&1; then
  exit 0
fi
echo "fetching Kafka jars with maven (cached in ~/.m2) ..." >&2
rm -rf "$dest/libs"; mkdir -p "$dest/libs"
mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
  -DoutputDirectory="$dest/libs" -DincludeScope=runtime
echo "$want" > "$stamp"
