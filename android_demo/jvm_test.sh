#!/usr/bin/env bash
# Host-JVM test of the app's inference class: compiles Recommender.java (+ ItemIds.java, Json.java) and
# test/RecommenderJvmTest.java against onnxruntime Java 1.17 for linux-x64, writes the Python
# onnxruntime fixture for the artifact, and compares top-k ids and scores. Ends with "N passed, N failed".
#   usage: jvm_test.sh ARTIFACT_DIR [FIXTURE_JSON]   (FIXTURE_JSON: use a given fixture instead of writing one)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
REPO="$(cd "$HERE/.." && pwd)"
[ -x "$REPO/.venv/bin/python" ] && PY="$REPO/.venv/bin/python"

ARTIFACT="${1:-}"
[ -n "$ARTIFACT" ] || die "usage: jvm_test.sh ARTIFACT_DIR [FIXTURE_JSON]"
[ -f "$ARTIFACT/manifest.json" ] || die "$ARTIFACT: not an artifact directory (no manifest.json); build one with 'make demo' or 'odrec-export build'"
command -v javac >/dev/null && command -v java >/dev/null || die "javac/java not found: install a JDK (apt-get install openjdk-17-jdk-headless)"
ARTIFACT="$(cd "$ARTIFACT" && pwd)"

fetch_ort_jvm
ORT_JAR="$TOOLS/onnxruntime-1.17.0-linux-x64.jar"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

javac -nowarn -encoding UTF-8 -d "$WORK/classes" -cp "$ORT_JAR" \
  "$HERE/src/org/odrec/demo/Recommender.java" "$HERE/src/org/odrec/demo/ItemIds.java" "$HERE/src/org/odrec/demo/Json.java" \
  "$HERE/test/org/odrec/demo/RecommenderJvmTest.java"

FIXTURE="${2:-}"
if [ -z "$FIXTURE" ]; then
  FIXTURE="$WORK/fixture.json"
  (cd "$REPO" && PYTHONPATH="$REPO/toolchain${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m odrec_export.verify.android_fixture "$ARTIFACT" "$FIXTURE") >&2
fi
# onnxruntime Java unpacks its native library into java.io.tmpdir: keep it in $WORK, removed on exit
java -Djava.io.tmpdir="$WORK" -cp "$WORK/classes:$ORT_JAR" org.odrec.demo.RecommenderJvmTest "$ARTIFACT" "$FIXTURE"
