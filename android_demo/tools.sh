# Fetches and caches the Android build tools (sourced by build_apk.sh and jvm_test.sh).
# Every download is pinned by version and sha256 and lands in an ignored cache; nothing is committed.
# See /work/shared/platform-notes.md ("Building the APK without Gradle") for where each piece lives.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${ODREC_ANDROID_CACHE:-$HERE/.cache}"
DL="$CACHE/dl"
TOOLS="$CACHE/tools"
PY="${PY:-python3}"

# android.jar (API 23, the highest Debian ships) from bullseye's libandroid-23-java.
ANDROID_DEB=libandroid-23-java_6.0.1+r72-6_all.deb
ANDROID_DEB_SHA=8af1b6df556971dda0a6da3536ea526a838e0c363afcdd454213d8bce94793e3
# D8 3.3.28 inside bundletool-all-1.17.2.jar, carried by the PyPI wheel mobsf 4.4.0 (build tool only).
MOBSF_WHL=mobsf-4.4.0-py3-none-any.whl
MOBSF_SHA=74329efc7eee885ca6b9448726ca448c6f5c7ca80ec3dc9a98ee11fb7cd7c0d4
# Microsoft's onnxruntime.aar (ORT 1.29.0) inside the npm package com.github.asus4.onnxruntime 0.4.9.
ORT_TGZ=com.github.asus4.onnxruntime-0.4.9.tgz
ORT_TGZ_SHA=e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d
# onnxruntime Java 1.17.0 (with linux-x64 natives) inside the anserini fatjar of PyPI's pyserini 0.40.0.
PYSERINI_WHL=pyserini-0.40.0-py3-none-any.whl
PYSERINI_SHA=fbda53e84dbded1b120055a900976c37d6a53cc841d518f40e2a8b00e454377f

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[android] $*" >&2; }

# check_sha FILE SHA: a cached or fresh download must match its pin, else it is deleted.
check_sha() {
  local got; got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    rm -f "$1"
    die "sha256 mismatch for $(basename "$1"): got $got, pinned $2 (file removed; re-run to fetch again)"
  fi
}

apt_tools() {  # aapt2, zipalign, apksigner from the machine's own Debian sources
  command -v aapt2 >/dev/null && command -v zipalign >/dev/null && command -v apksigner >/dev/null \
    && command -v javac >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "aapt2/zipalign/apksigner/javac missing; install as root: apt-get install aapt zipalign apksigner openjdk-17-jdk-headless"
  log "installing aapt zipalign apksigner openjdk-17-jdk-headless (apt)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    aapt zipalign apksigner openjdk-17-jdk-headless >/dev/null || die "apt-get install of the build tools failed"
}

fetch_android_jar() {
  [ -f "$TOOLS/android.jar" ] && return 0
  mkdir -p "$DL" "$TOOLS"
  if [ ! -f "$DL/$ANDROID_DEB" ]; then
    # A private apt configuration naming bullseye: the machine's own sources and state stay untouched.
    local a="$CACHE/apt"
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial"; : > "$a/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main" > "$a/sources.list"
    local o=(-o "Dir::Etc::SourceList=$a/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$a/lists" -o "Dir::State::status=$a/status" -o "Dir::Cache=$a/cache"
             -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
    log "fetching $ANDROID_DEB (private apt config, bullseye)"
    apt-get "${o[@]}" update -qq >/dev/null || die "apt-get update (private bullseye config) failed"
    (cd "$DL" && apt-get "${o[@]}" download -qq libandroid-23-java=6.0.1+r72-6 >/dev/null) \
      || die "apt-get download libandroid-23-java failed"
  fi
  check_sha "$DL/$ANDROID_DEB" "$ANDROID_DEB_SHA"
  local x; x="$(mktemp -d)"
  dpkg-deb -x "$DL/$ANDROID_DEB" "$x"
  cp "$x/usr/lib/android-sdk/platforms/android-23/android.jar" "$TOOLS/android.jar.tmp" && mv "$TOOLS/android.jar.tmp" "$TOOLS/android.jar"
  rm -rf "$x"
}

pip_fetch() {  # pip_fetch SPEC FILE SHA
  mkdir -p "$DL"
  if [ ! -f "$DL/$2" ]; then
    log "fetching $2 from PyPI, once, into $DL (pyserini's wheel is about 180 MB, mobsf's 104 MB)"
    "$PY" -m pip download -q --no-deps --only-binary=:all: "$1" -d "$DL" >"$DL/pip.log" 2>&1 \
      || { cat "$DL/pip.log" >&2; die "pip download $1 failed"; }
  fi
  check_sha "$DL/$2" "$3"
}

fetch_d8() {
  [ -f "$TOOLS/bundletool-all-1.17.2.jar" ] && return 0
  pip_fetch mobsf==4.4.0 "$MOBSF_WHL" "$MOBSF_SHA"
  mkdir -p "$TOOLS"
  unzip -q -o -j "$DL/$MOBSF_WHL" mobsf/StaticAnalyzer/tools/bundletool-all-1.17.2.jar -d "$TOOLS/tmp-d8"
  mv "$TOOLS/tmp-d8/bundletool-all-1.17.2.jar" "$TOOLS/" && rm -rf "$TOOLS/tmp-d8"
}

fetch_ort_android() {  # -> $TOOLS/ort-android/{classes.jar,jni/<abi>/*.so}
  [ -f "$TOOLS/ort-android/classes.jar" ] && return 0
  mkdir -p "$DL"
  if [ ! -f "$DL/$ORT_TGZ" ]; then
    log "fetching $ORT_TGZ (npm)"
    (cd "$DL" && npm pack -q com.github.asus4.onnxruntime@0.4.9 >/dev/null 2>&1) || die "npm pack com.github.asus4.onnxruntime@0.4.9 failed"
  fi
  check_sha "$DL/$ORT_TGZ" "$ORT_TGZ_SHA"
  local x; x="$(mktemp -d)"
  tar -xzf "$DL/$ORT_TGZ" -C "$x" package/Plugins/Android/onnxruntime.aar
  rm -rf "$TOOLS/ort-android.tmp"; mkdir -p "$TOOLS/ort-android.tmp"
  unzip -q "$x/package/Plugins/Android/onnxruntime.aar" 'classes.jar' 'jni/*' -d "$TOOLS/ort-android.tmp"
  rm -rf "$x" "$TOOLS/ort-android"; mv "$TOOLS/ort-android.tmp" "$TOOLS/ort-android"
}

fetch_ort_jvm() {  # -> $TOOLS/onnxruntime-1.17.0-linux-x64.jar (classes + linux-x64 natives only)
  local jar="$TOOLS/onnxruntime-1.17.0-linux-x64.jar"
  [ -f "$jar" ] && return 0
  pip_fetch pyserini==0.40.0 "$PYSERINI_WHL" "$PYSERINI_SHA"
  local x; x="$(mktemp -d)"
  unzip -q -j "$DL/$PYSERINI_WHL" pyserini/resources/jars/anserini-0.38.0-fatjar.jar -d "$x"
  mkdir -p "$x/ort"
  unzip -q "$x/anserini-0.38.0-fatjar.jar" 'ai/onnxruntime/*.class' 'ai/onnxruntime/platform/*' \
    'ai/onnxruntime/providers/*' 'ai/onnxruntime/native/linux-x64/*' \
    META-INF/maven/com.microsoft.onnxruntime/onnxruntime/pom.xml -d "$x/ort"
  grep -q '<version>1.17.0</version>' "$x/ort/META-INF/maven/com.microsoft.onnxruntime/onnxruntime/pom.xml" \
    || die "the anserini fatjar does not carry onnxruntime 1.17.0"
  mkdir -p "$TOOLS"
  (cd "$x/ort" && zip -q -r "$jar.tmp" .) && mv "$jar.tmp" "$jar"
  rm -rf "$x"
}

debug_keystore() {  # a per-machine debug key, generated into the cache (never committed)
  [ -f "$CACHE/debug.keystore" ] && return 0
  mkdir -p "$CACHE"
  keytool -genkeypair -keystore "$CACHE/debug.keystore.tmp" -storepass android -keypass android \
    -alias androiddebugkey -keyalg RSA -keysize 2048 -validity 10000 \
    -dname "CN=Android Debug,O=Android,C=US" >/dev/null 2>&1 || die "keytool could not create a debug key"
  mv "$CACHE/debug.keystore.tmp" "$CACHE/debug.keystore"
}
