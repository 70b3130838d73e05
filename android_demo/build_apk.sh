#!/usr/bin/env bash
# Builds android_demo/build/odrec-demo.apk without Gradle: aapt2 → javac → D8 → zip → zipalign → apksigner.
#   usage: build_apk.sh ARTIFACT_DIR [ABIS]     ABIS: space/comma list, default "arm64-v8a" (add x86_64 for emulators)
# Build tools are fetched on first use into android_demo/.cache (pinned versions, sha256-checked).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
REPO="$(cd "$HERE/.." && pwd)"
[ -x "$REPO/.venv/bin/python" ] && PY="$REPO/.venv/bin/python"
START=$(date +%s)

ARTIFACT="${1:-}"
ABIS="$(echo "${2:-arm64-v8a}" | tr ',' ' ')"
[ -n "$ARTIFACT" ] || die "usage: build_apk.sh ARTIFACT_DIR [ABIS]"
[ -d "$ARTIFACT" ] || die "$ARTIFACT: no such artifact directory (build one with 'make demo' or 'odrec-export build', or pass ARTIFACT=...)"
[ -f "$ARTIFACT/manifest.json" ] || die "$ARTIFACT: missing manifest.json (not an odrec-export artifact)"
# The id map: items.bin (integer ids) or items.txt, as the manifest says (items.txt before it said).
IDS="$(sed -n 's/.*"file": *"\(items\.[a-z]*\)".*/\1/p' "$ARTIFACT/manifest.json" | head -1)"
IDS="${IDS:-items.txt}"
for f in model.onnx "$IDS"; do
  [ -f "$ARTIFACT/$f" ] || die "$ARTIFACT: missing $f (not an odrec-export artifact)"
done
# The same checks the app makes at load time (sizes, sha256, items count), so a bad artifact fails here.
if "$PY" -c "import odrec_export" 2>/dev/null || [ -d "$REPO/toolchain/odrec_export" ]; then
  PYTHONPATH="$REPO/toolchain${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$ARTIFACT" <<'EOF' || exit 1
import sys
from odrec_export.export.artifact import ArtifactError, validate
try:
    validate(sys.argv[1])
except ArtifactError as e:
    sys.exit(f"error: {e}")
EOF
fi
for abi in $ABIS; do
  case "$abi" in arm64-v8a|x86_64|armeabi-v7a|x86) ;; *) die "unknown ABI '$abi' (choose from arm64-v8a x86_64 armeabi-v7a x86)";; esac
done

apt_tools
fetch_android_jar
fetch_d8
fetch_ort_android
debug_keystore
ANDROID_JAR="$TOOLS/android.jar"
ORT="$TOOLS/ort-android"

OUT="$HERE/build"
W="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
mkdir -p "$OUT" "$W/assets/artifact" "$W/gen" "$W/classes" "$W/dex"

log "resources (aapt2)"
aapt2 compile --dir "$HERE/res" -o "$W/res.zip"
cp "$ARTIFACT/manifest.json" "$ARTIFACT/model.onnx" "$ARTIFACT/$IDS" "$W/assets/artifact/"
aapt2 link -o "$W/base.apk" -I "$ANDROID_JAR" --manifest "$HERE/AndroidManifest.xml" \
  --min-sdk-version 24 --target-sdk-version 34 --java "$W/gen" -A "$W/assets" "$W/res.zip"

log "java (javac --release 8 against android.jar API 23 + onnxruntime $(basename "$ORT") classes.jar)"
# -classpath, not -bootclasspath: the latter breaks on lambdas (platform notes).
javac --release 8 -nowarn -encoding UTF-8 -classpath "$ANDROID_JAR:$ORT/classes.jar" -d "$W/classes" \
  $(find "$HERE/src" -name '*.java') $(find "$W/gen" -name '*.java') 2>&1 | grep -v '^Note:' >&2 || true
[ -f "$W/classes/org/odrec/demo/MainActivity.class" ] || die "javac failed"

log "dex (D8: app + onnxruntime classes)"
java -cp "$TOOLS/bundletool-all-1.17.2.jar" com.android.tools.r8.D8 --release --min-api 24 \
  --lib "$ANDROID_JAR" --output "$W/dex" $(find "$W/classes" -name '*.class') "$ORT/classes.jar" 2> "$W/d8.log" \
  || { cat "$W/d8.log" >&2; die "D8 failed"; }
[ -f "$W/dex/classes.dex" ] || die "D8 wrote no classes.dex"

log "package ($ABIS)"
cp "$W/base.apk" "$W/unaligned.apk"
(cd "$W/dex" && zip -q -X "$W/unaligned.apk" classes*.dex)
for abi in $ABIS; do
  mkdir -p "$W/native/lib/$abi"
  cp "$ORT/jni/$abi/libonnxruntime.so" "$ORT/jni/$abi/libonnxruntime4j_jni.so" "$W/native/lib/$abi/"
done
(cd "$W/native" && zip -q -X -r "$W/unaligned.apk" lib)
zipalign -p -f 4 "$W/unaligned.apk" "$W/aligned.apk"
apksigner sign --ks "$CACHE/debug.keystore" --ks-pass pass:android --key-pass pass:android \
  --ks-key-alias androiddebugkey --out "$W/signed.apk" "$W/aligned.apk"

log "checks"
apksigner verify "$W/signed.apk" || die "apksigner verify failed"
zipalign -c -p 4 "$W/signed.apk" || die "zipalign -c -p 4 failed"
aapt dump badging "$W/signed.apk" > "$W/badging.txt" || die "aapt dump badging failed"
grep -q "^package: name='org.odrec.demo'" "$W/badging.txt" || die "badging: wrong package"
grep -q "^launchable-activity: name='org.odrec.demo.MainActivity'" "$W/badging.txt" || die "badging: no launchable activity"
unzip -p "$W/signed.apk" classes.dex > "$W/check.dex"  # (not piped into grep -q: SIGPIPE + pipefail)
grep -aq 'Lai/onnxruntime/OrtSession;' "$W/check.dex" || die "classes.dex lacks the onnxruntime classes"
grep -aq 'Lorg/odrec/demo/Recommender;' "$W/check.dex" || die "classes.dex lacks the app classes"
for abi in $ABIS; do
  for so in libonnxruntime.so libonnxruntime4j_jni.so; do
    unzip -l "$W/signed.apk" "lib/$abi/$so" >/dev/null || die "APK lacks lib/$abi/$so"
  done
done
for f in manifest.json model.onnx "$IDS"; do
  unzip -l "$W/signed.apk" "assets/artifact/$f" >/dev/null || die "APK lacks assets/artifact/$f"
done

mv "$W/signed.apk" "$OUT/odrec-demo.apk"
grep -E "^(package|sdkVersion|targetSdkVersion|launchable-activity|native-code)" "$W/badging.txt"
echo "apksigner verify: ok; zipalign -c -p 4: ok"
echo "wrote android_demo/build/odrec-demo.apk: $(stat -c %s "$OUT/odrec-demo.apk") bytes, ABIs: $ABIS, artifact: $ARTIFACT, $(( $(date +%s) - START )) s"
