package org.odrec.demo;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * On-device next-item inference over an odrec-export artifact (model.onnx, the id map items.bin or
 * items.txt, manifest.json).
 * Android-free on purpose: the app opens assets through {@link AssetOpener}, and the host JVM test
 * opens files from a directory, so the very same code path is tested off the phone.
 */
public final class Recommender implements AutoCloseable {
    public static final String MODEL = "model.onnx";
    public static final String ITEMS = ItemIds.TEXT;  // the id map of artifacts whose manifest names none
    public static final String MANIFEST = "manifest.json";
    public static final String FORMAT = "odrec-export-artifact";
    public static final int FORMAT_VERSION = 1;
    // The artifact contract's tensor names (see the build issue / docs/android.md).
    public static final String INPUT = "item_ids";
    public static final String OUT_IDS = "top_ids";
    public static final String OUT_SCORES = "top_scores";

    /** Opens one artifact file by name (AssetManager::open on Android, a directory on a desktop). */
    public interface AssetOpener {
        InputStream open(String name) throws IOException;
    }

    /** A corrupted, missing or inconsistent artifact; the message names the file and the problem. */
    public static final class ArtifactException extends Exception {
        public ArtifactException(String message) { super(message); }
    }

    public static final class Item {
        public final int index;      // 1..N, the model's item index
        public final String rawId;   // the id map's entry for `index`
        public final float score;
        Item(int index, String rawId, float score) { this.index = index; this.rawId = rawId; this.score = score; }
    }

    public static final class Result {
        public final List<Item> items;  // descending score, length top_k
        public final long nanos;        // tensor creation + session.run
        Result(List<Item> items, long nanos) { this.items = items; this.nanos = nanos; }
    }

    private final OrtEnvironment env;
    private final OrtSession session;
    private final Map<String, Object> manifest;
    private final ItemIds items;
    private final int topK;
    private final int maxSessionLength;
    private final long modelBytes;

    private Recommender(OrtEnvironment env, OrtSession session, Map<String, Object> manifest,
                        ItemIds items, int topK, int maxLen, long modelBytes) {
        this.env = env;
        this.session = session;
        this.manifest = manifest;
        this.items = items;
        this.topK = topK;
        this.maxSessionLength = maxLen;
        this.modelBytes = modelBytes;
    }

    /** Reads and checks the whole artifact, then creates the onnxruntime session (slow: call off the UI thread). */
    public static Recommender load(AssetOpener opener, int threads) throws ArtifactException {
        Map<String, Object> manifest = readManifest(opener);
        if (!FORMAT.equals(manifest.get("format"))) {
            throw new ArtifactException("manifest.json: not an odrec-export artifact (format " + manifest.get("format") + ")");
        }
        if (!Long.valueOf(FORMAT_VERSION).equals(manifest.get("format_version"))) {
            throw new ArtifactException("manifest.json: artifact format version " + manifest.get("format_version")
                    + " is not supported by this app (it reads version " + FORMAT_VERSION + ")");
        }
        int numItems = positiveInt(manifest, "num_items");
        int topK = positiveInt(manifest, "top_k");
        int maxLen = positiveInt(manifest, "max_session_length");
        if (topK > numItems) {
            throw new ArtifactException("manifest.json: top_k " + topK + " exceeds num_items " + numItems);
        }

        byte[] model = readChecked(opener, manifest, MODEL);
        String idFile = idMapFile(manifest);
        ItemIds items = ItemIds.read(idFile, readChecked(opener, manifest, idFile), numItems);

        OrtEnvironment env = OrtEnvironment.getEnvironment();
        OrtSession session;
        try (OrtSession.SessionOptions opts = new OrtSession.SessionOptions()) {
            if (threads > 0) opts.setIntraOpNumThreads(threads);
            session = env.createSession(model, opts);
        } catch (OrtException e) {
            throw new ArtifactException("onnxruntime " + ortVersion() + " could not load model.onnx: " + e.getMessage());
        }
        try {
            checkSignature(session);
        } catch (ArtifactException e) {
            closeQuietly(session);
            throw e;
        }
        return new Recommender(env, session, manifest, items, topK, maxLen, model.length);
    }

    public int numItems() { return items.size(); }
    /** The id-map file this artifact ships: items.bin (integer ids) or items.txt. */
    public String idMapFile() { return idMapFile(manifest); }
    public int topK() { return topK; }
    public int maxSessionLength() { return maxSessionLength; }
    public long modelBytes() { return modelBytes; }
    /** The catalogue: raw item ids in index order (index i is element i - 1). */
    public List<String> catalogue() { return Collections.unmodifiableList(items.asList()); }
    public Map<String, Object> manifest() { return manifest; }

    /**
     * The manifest's accuracy figures, as "name value" strings: the built artifact's metrics measured
     * by `odrec-export build --eval-data` (manifest "evaluation": data, metrics, quantised_minus_fp32_points).
     * Empty when the artifact was built without evaluation.
     */
    public List<String> accuracyFigures() {
        List<String> out = new ArrayList<>();
        Object ev = manifest.get("evaluation");
        if (!(ev instanceof Map)) return out;
        Map<?, ?> e = (Map<?, ?>) ev;
        if (e.get("data") != null) out.add("on " + e.get("data") + (e.get("samples") != null ? " (" + e.get("samples") + " samples)" : ""));
        if (e.get("metrics") instanceof Map) {
            for (Map.Entry<?, ?> m : ((Map<?, ?>) e.get("metrics")).entrySet()) {
                if (String.valueOf(m.getKey()).contains("@") && m.getValue() instanceof Number) {
                    out.add(m.getKey() + " " + String.format(Locale.US, "%.4f", ((Number) m.getValue()).doubleValue()));
                }
            }
        }
        if (e.get("quantised_minus_fp32_points") instanceof Map) {
            for (Map.Entry<?, ?> m : ((Map<?, ?>) e.get("quantised_minus_fp32_points")).entrySet()) {
                if (String.valueOf(m.getKey()).endsWith("@10") && m.getValue() instanceof Number) {
                    out.add(m.getKey() + " vs fp32 " + String.format(Locale.US, "%+.3f pt", ((Number) m.getValue()).doubleValue()));
                }
            }
        }
        return out;
    }

    /** Raw session → model indices: unknown ids are an error, only the most recent max_session_length are kept. */
    public long[] toIds(List<String> rawSession) {
        int from = Math.max(0, rawSession.size() - maxSessionLength);
        List<String> kept = rawSession.subList(from, rawSession.size());
        if (kept.isEmpty()) return new long[] {0};  // all padding: the graph still returns a valid top-k
        long[] ids = new long[kept.size()];
        for (int i = 0; i < ids.length; i++) {
            int idx = items.index(kept.get(i));
            if (idx == 0) throw new IllegalArgumentException("unknown item id '" + kept.get(i) + "' (not in the catalogue)");
            ids[i] = idx;
        }
        return ids;
    }

    /** The top-k next items for a session of raw item ids, most recent last. */
    public Result recommend(List<String> rawSession) throws OrtException {
        long[] ids = toIds(rawSession);
        long t0 = System.nanoTime();
        long[][] topIds;
        float[][] topScores;
        try (OnnxTensor input = OnnxTensor.createTensor(env, new long[][] {ids});
             OrtSession.Result out = session.run(Collections.singletonMap(INPUT, input))) {
            topIds = (long[][]) out.get(OUT_IDS).get().getValue();
            topScores = (float[][]) out.get(OUT_SCORES).get().getValue();
        }
        long nanos = System.nanoTime() - t0;
        if (topIds.length != 1 || topIds[0].length != topK || topScores[0].length != topK) {
            throw new IllegalStateException("model returned " + topIds[0].length + " items, manifest top_k is " + topK);
        }
        List<Item> result = new ArrayList<>(topK);
        for (int j = 0; j < topK; j++) {
            int idx = (int) topIds[0][j];
            if (idx < 1 || idx > items.size()) {
                throw new IllegalStateException("model returned item index " + idx + " outside 1.." + items.size());
            }
            result.add(new Item(idx, items.raw(idx), topScores[0][j]));
        }
        return new Result(result, nanos);
    }

    public static String ortVersion() {
        try {
            return OrtEnvironment.getEnvironment().getVersion();
        } catch (Throwable t) {  // getVersion is missing from some older builds
            return "(unknown version)";
        }
    }

    @Override
    public void close() {
        closeQuietly(session);
    }

    // ---- artifact reading and checking ----

    private static Map<String, Object> readManifest(AssetOpener opener) throws ArtifactException {
        String text = new String(readAll(opener, MANIFEST), StandardCharsets.UTF_8);
        Object parsed;
        try {
            parsed = Json.parse(text);
        } catch (IllegalArgumentException e) {
            throw new ArtifactException("manifest.json is not valid JSON: " + e.getMessage());
        }
        if (!(parsed instanceof Map)) throw new ArtifactException("manifest.json is not a JSON object");
        @SuppressWarnings("unchecked")
        Map<String, Object> m = (Map<String, Object>) parsed;
        return m;
    }

    private static int positiveInt(Map<String, Object> m, String key) throws ArtifactException {
        Object v = m.get(key);
        if (!(v instanceof Long) || (Long) v < 1 || (Long) v > Integer.MAX_VALUE) {
            throw new ArtifactException("manifest.json: '" + key + "' must be a positive integer, got " + v);
        }
        return (int) (long) (Long) v;
    }

    /** The manifest's record of one file: {"sha256": hex, "bytes": n} under "files" (a map by name or a list). */
    private static Map<String, Object> fileEntry(Map<String, Object> manifest, String name) throws ArtifactException {
        Object files = manifest.get("files");
        Object entry = null;
        if (files instanceof Map) {
            entry = ((Map<?, ?>) files).get(name);
        } else if (files instanceof List) {
            for (Object o : (List<?>) files) {
                if (o instanceof Map && name.equals(((Map<?, ?>) o).get("name"))) entry = o;
            }
        }
        if (!(entry instanceof Map) || !(((Map<?, ?>) entry).get("sha256") instanceof String)) {
            throw new ArtifactException("manifest.json has no sha256 for " + name + " under 'files'");
        }
        @SuppressWarnings("unchecked")
        Map<String, Object> e = (Map<String, Object>) entry;
        return e;
    }

    /** Reads a file and checks its size and sha256 against the manifest: a corrupted asset fails here. */
    private static byte[] readChecked(AssetOpener opener, Map<String, Object> manifest, String name) throws ArtifactException {
        Map<String, Object> entry = fileEntry(manifest, name);
        byte[] data = readAll(opener, name);
        Object bytes = entry.containsKey("bytes") ? entry.get("bytes") : entry.get("size");
        if (bytes instanceof Long && (Long) bytes != data.length) {
            throw new ArtifactException(name + " is corrupted or does not belong to this manifest: "
                    + data.length + " bytes, manifest says " + bytes);
        }
        String want = ((String) entry.get("sha256")).toLowerCase();
        String got = sha256(data);
        if (!got.equals(want)) {
            throw new ArtifactException(name + " is corrupted or does not belong to this manifest: sha256 "
                    + got + ", manifest says " + want);
        }
        return data;
    }

    /** The manifest's "id_map": {"file": ...}; artifacts written before it existed ship items.txt. */
    private static String idMapFile(Map<String, Object> manifest) {
        Object m = manifest.get("id_map");
        if (m instanceof Map && ((Map<?, ?>) m).get("file") instanceof String) return (String) ((Map<?, ?>) m).get("file");
        return ItemIds.TEXT;
    }

    private static void checkSignature(OrtSession s) throws ArtifactException {
        try {
            Map<String, NodeInfo> in = s.getInputInfo();
            Map<String, NodeInfo> out = s.getOutputInfo();
            if (in.size() != 1 || !in.containsKey(INPUT)) {
                throw new ArtifactException("model.onnx inputs are " + in.keySet() + ", expected [" + INPUT + "]");
            }
            if (!out.containsKey(OUT_IDS) || !out.containsKey(OUT_SCORES)) {
                throw new ArtifactException("model.onnx outputs are " + out.keySet() + ", expected " + OUT_IDS + " and " + OUT_SCORES);
            }
        } catch (OrtException e) {
            throw new ArtifactException("onnxruntime could not describe model.onnx: " + e.getMessage());
        }
    }

    private static byte[] readAll(AssetOpener opener, String name) throws ArtifactException {
        try (InputStream in = opener.open(name)) {
            if (in == null) throw new IOException("not found");
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            byte[] chunk = new byte[1 << 16];
            for (int n; (n = in.read(chunk)) > 0; ) buf.write(chunk, 0, n);
            return buf.toByteArray();
        } catch (IOException e) {
            throw new ArtifactException("cannot read " + name + " from the artifact: " + e.getMessage());
        }
    }

    static String sha256(byte[] data) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(data);
            StringBuilder b = new StringBuilder();
            for (byte x : d) b.append(String.format("%02x", x));
            return b.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static void closeQuietly(OrtSession s) {
        try {
            s.close();
        } catch (OrtException ignored) {
            // closing a session that failed validation: nothing more to report
        }
    }
}
