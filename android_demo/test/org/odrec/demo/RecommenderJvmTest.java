package org.odrec.demo;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * Host-JVM test of Recommender (onnxruntime Java for linux-x64) against the Python onnxruntime
 * fixture written by `python -m odrec_export.android_fixture`. Usage: ARTIFACT_DIR FIXTURE_JSON.
 * Prints one line per check and a final "N passed, N failed"; exits non-zero on any failure.
 */
public final class RecommenderJvmTest {
    interface Check { void run() throws Exception; }

    private static int passed, failed;

    private static void check(String name, Check c) {
        try {
            c.run();
            passed++;
            System.out.println("PASS " + name);
        } catch (Throwable t) {
            failed++;
            System.out.println("FAIL " + name + ": " + t);
        }
    }

    private static void require(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    /** Opens files from the artifact directory, letting one file's bytes be replaced. */
    static Recommender.AssetOpener opener(Path dir, String tampered, byte[] replacement) {
        return name -> {
            if (name.equals(tampered)) {
                if (replacement == null) throw new IOException(name + " not found");
                return new ByteArrayInputStream(replacement);
            }
            return Files.newInputStream(dir.resolve(name));
        };
    }

    /** Loading must fail with an ArtifactException whose message contains `expected`. */
    static void expectLoadError(Path dir, String file, byte[] replacement, String expected) {
        try (Recommender r = Recommender.load(opener(dir, file, replacement), 1)) {
            throw new AssertionError("loaded a tampered " + file + " without error");
        } catch (Recommender.ArtifactException e) {
            System.out.println("     error: " + e.getMessage());
            require(e.getMessage().contains(expected), "message '" + e.getMessage() + "' lacks '" + expected + "'");
        }
    }

    static List<String> strings(Object o) {
        List<String> out = new ArrayList<>();
        for (Object x : (List<?>) o) out.add(String.valueOf(x));
        return out;
    }

    public static void main(String[] args) throws Exception {
        Path dir = Paths.get(args[0]);
        @SuppressWarnings("unchecked")
        Map<String, Object> fixture = (Map<String, Object>) Json.parse(
                new String(Files.readAllBytes(Paths.get(args[1])), StandardCharsets.UTF_8));
        System.out.println("onnxruntime Java " + Recommender.ortVersion() + " vs Python onnxruntime " + fixture.get("onnxruntime"));
        final double tol = 1e-4;

        Recommender loaded = null;
        try {
            loaded = Recommender.load(opener(dir, null, null), 1);
        } catch (Recommender.ArtifactException e) {
            check("load " + dir, () -> { throw e; });  // reported as a failure, not a crash
            System.out.println(passed + " passed, " + failed + " failed");
            System.exit(1);
        }
        final Recommender rec = loaded;
        System.out.println("accuracy figures: " + rec.accuracyFigures());
        if (rec.manifest().get("evaluation") != null) {
            check("manifest accuracy figures are readable", () ->
                    require(rec.accuracyFigures().toString().contains("HR@10"), "no HR@10 in " + rec.accuracyFigures()));
        }
        List<?> sessions = (List<?>) fixture.get("sessions");
        check("catalogue matches " + rec.idMapFile() + " as Python reads it (" + rec.numItems() + " items)", () -> {
            require(rec.numItems() == ((Number) fixture.get("num_items")).intValue(), "num_items differs");
            String joined = String.join("\n", rec.catalogue());
            require(Recommender.sha256(joined.getBytes(StandardCharsets.UTF_8)).equals(fixture.get("catalogue_sha256")),
                    "catalogue differs from the exporter's");
            for (int i = 1; i <= rec.numItems(); i += Math.max(1, rec.numItems() / 1000)) {
                require(rec.toIds(Arrays.asList(rec.catalogue().get(i - 1)))[0] == i, "raw id of index " + i + " maps back elsewhere");
            }
        });
        for (Object o : (List<?>) fixture.get("id_map_cases")) {
            Map<?, ?> c = (Map<?, ?>) o;
            List<String> want = strings(c.get("ids"));
            check("items.bin encoding " + c.get("encoding") + " decodes as the exporter wrote it (" + want.size() + " ids)", () -> {
                String hex = (String) c.get("hex");
                byte[] data = new byte[hex.length() / 2];
                for (int i = 0; i < data.length; i++) data[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
                ItemIds ids = ItemIds.fromBinary(data, want.size());
                require(ids.asList().equals(want), "decoded ids differ");
                for (int i = 0; i < want.size(); i++) require(ids.index(want.get(i)) == i + 1, "lookup of " + want.get(i));
                require(ids.index("0" + want.get(0)) == 0 && ids.index("x") == 0, "non-canonical ids must not match");
                try {
                    ItemIds.fromBinary(Arrays.copyOf(data, data.length - 1), want.size());
                    throw new AssertionError("accepted a truncated items.bin");
                } catch (Recommender.ArtifactException e) {
                    require(e.getMessage().contains("items.bin"), e.getMessage());
                }
            });
        }
        for (int s = 0; s < sessions.size(); s++) {
            Map<?, ?> f = (Map<?, ?>) sessions.get(s);
            List<String> items = strings(f.get("items"));
            List<?> wantIds = (List<?>) f.get("top_ids");
            List<?> wantScores = (List<?>) f.get("top_scores");
            check("session " + s + " (length " + items.size() + "): top-" + wantIds.size() + " ids and scores match Python", () -> {
                Recommender.Result r = rec.recommend(items);
                require(r.items.size() == wantIds.size(), "got " + r.items.size() + " items");
                for (int j = 0; j < wantIds.size(); j++) {
                    Recommender.Item it = r.items.get(j);
                    double want = ((Number) wantScores.get(j)).doubleValue();
                    require(Math.abs(it.score - want) <= tol * Math.max(1.0, Math.abs(want)),
                            "rank " + j + ": score " + it.score + " vs " + want);
                    long wantId = ((Number) wantIds.get(j)).longValue();
                    if (it.index != wantId) {  // only a near-tie may swap places
                        int k = wantIds.indexOf((long) it.index);
                        require(k >= 0 && Math.abs(((Number) wantScores.get(k)).doubleValue() - it.score)
                                <= tol * Math.max(1.0, Math.abs(want)), "rank " + j + ": id " + it.index + " vs " + wantId);
                    }
                    require(it.rawId.equals(rec.catalogue().get(it.index - 1)), "raw id mapping");
                }
            });
        }
        check("over-long session keeps the most recent max_session_length items", () -> {
            List<String> cat = rec.catalogue();
            List<String> session = new ArrayList<>();
            for (int i = 0; i < rec.maxSessionLength() + 7; i++) session.add(cat.get(i % cat.size()));
            long[] ids = rec.toIds(session);
            require(ids.length == rec.maxSessionLength(), "kept " + ids.length);
            require(ids[ids.length - 1] == (session.size() - 1) % cat.size() + 1, "most recent item not last");
            Recommender.Result r = rec.recommend(session);
            require(r.items.size() == rec.topK(), "top-k size");
        });
        check("empty session gives a valid top-k without NaN", () -> {
            Recommender.Result r = rec.recommend(new ArrayList<>());
            require(r.items.size() == rec.topK(), "top-k size");
            for (Recommender.Item it : r.items) require(!Float.isNaN(it.score), "NaN score");
        });
        check("unknown raw item id is a clear error", () -> {
            try {
                rec.recommend(Arrays.asList("no-such-item-\u2603"));
                throw new AssertionError("accepted an unknown id");
            } catch (IllegalArgumentException e) {
                require(e.getMessage().contains("unknown item id"), e.getMessage());
            }
        });

        byte[] model = Files.readAllBytes(dir.resolve(Recommender.MODEL));
        String idFile = rec.idMapFile();
        byte[] items = Files.readAllBytes(dir.resolve(idFile));
        String manifest = new String(Files.readAllBytes(dir.resolve(Recommender.MANIFEST)), StandardCharsets.UTF_8);
        check("corrupted model.onnx (one byte flipped) is a clear error", () -> {
            byte[] bad = model.clone();
            bad[bad.length / 2] ^= 0x5a;
            expectLoadError(dir, Recommender.MODEL, bad, "model.onnx is corrupted");
        });
        check("truncated model.onnx is a clear error", () ->
                expectLoadError(dir, Recommender.MODEL, Arrays.copyOf(model, model.length / 2), "model.onnx is corrupted"));
        check(idFile + " from another artifact is a clear error", () -> {
            byte[] bad = Arrays.copyOf(items, items.length + 1);
            bad[items.length] = '\n';
            expectLoadError(dir, idFile, bad, idFile + " is corrupted");
        });
        check("manifest with a mismatched num_items is a clear error", () -> {
            String bad = manifest.replaceFirst("\"num_items\"\\s*:\\s*\\d+", "\"num_items\": " + (rec.numItems() + 1));
            require(!bad.equals(manifest), "fixture manifest has no num_items to change");
            expectLoadError(dir, Recommender.MANIFEST, bad.getBytes(StandardCharsets.UTF_8), "mismatched artifact");
        });
        check("manifest of an unknown format version is a clear error", () -> {
            String bad = manifest.replaceFirst("\"format_version\"\\s*:\\s*\\d+", "\"format_version\": 999");
            require(!bad.equals(manifest), "fixture manifest has no format_version to change");
            expectLoadError(dir, Recommender.MANIFEST, bad.getBytes(StandardCharsets.UTF_8), "format version 999");
        });
        check("manifest that is not JSON is a clear error", () ->
                expectLoadError(dir, Recommender.MANIFEST, manifest.substring(0, manifest.length() / 2).getBytes(StandardCharsets.UTF_8),
                        "manifest.json is not valid JSON"));
        check("missing model.onnx is a clear error", () ->
                expectLoadError(dir, Recommender.MODEL, null, "cannot read model.onnx"));
        rec.close();
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
