#!/usr/bin/env bash
# Copies the pinned Apache Kafka jars from Maven Central (deploy/kafka/pom.xml) into $1/libs, once.
set -euo pipefail
dest="$1"
here="$(cd "$(dirname "$0")/.." && pwd)"
stamp="$dest/.pom.sha256"
want="$(sha256sum "$here/kafka/pom.xml" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && ls "$dest"/libs/kafka_2.13-*.jar >/dev/null 2>&1; then
  exit 0
fi
command -v java >/dev/null 2>&1 || { echo "java is missing; install it with: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }
command -v mvn >/dev/null 2>&1 || { echo "maven is missing; install it with: apt-get install -y maven" >&2; exit 1; }
echo "fetching Kafka jars with maven ..." >&2
rm -rf "$dest/libs"; mkdir -p "$dest/libs"
mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
  -DoutputDirectory="$dest/libs" -DincludeScope=runtime
echo "$want" > "$stamp"
