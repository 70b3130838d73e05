package org.odrec.demo;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.AbstractList;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The artifact's item-id map: raw id of every model index 1..N, and back. Reads items.txt (any ids,
 * one per line) or items.bin (integer ids; layout in the toolchain's id_map.py and
 * docs/artifact-format.md). Integer ids stay in two primitive arrays (the ids, and the indices sorted
 * by id for lookups): 12 bytes an item on the heap instead of a String and a map entry.
 */
final class ItemIds {
    static final String TEXT = "items.txt";
    static final String BINARY = "items.bin";
    private static final byte[] MAGIC = "ODRECIDS".getBytes(StandardCharsets.US_ASCII);
    private static final int HEADER = 32, FIXED = 1, DELTA = 2;

    private final List<String> text;          // items.txt: the lines
    private final Map<String, Integer> textIndex;
    private final long[] ids;                 // items.bin: ids[i] is the id of index i + 1
    private final int[] byId;                 // indices (0-based) sorted by id

    private ItemIds(List<String> text, Map<String, Integer> textIndex, long[] ids, int[] byId) {
        this.text = text;
        this.textIndex = textIndex;
        this.ids = ids;
        this.byId = byId;
    }

    static ItemIds read(String file, byte[] data, int numItems) throws Recommender.ArtifactException {
        if (BINARY.equals(file)) return fromBinary(data, numItems);
        if (TEXT.equals(file)) return fromText(data, numItems);
        throw new Recommender.ArtifactException("manifest.json: unknown id map file '" + file + "'");
    }

    static ItemIds fromText(byte[] data, int numItems) throws Recommender.ArtifactException {
        String all = new String(data, StandardCharsets.UTF_8);
        if (all.endsWith("\n")) all = all.substring(0, all.length() - 1);
        String[] lines = all.isEmpty() ? new String[0] : all.split("\n", -1);
        if (lines.length != numItems) {
            throw new Recommender.ArtifactException("items.txt has " + lines.length + " items but manifest.json says num_items "
                    + numItems + " (mismatched artifact)");
        }
        List<String> items = new ArrayList<>(lines.length);
        Map<String, Integer> index = new HashMap<>();
        for (int i = 0; i < lines.length; i++) {
            String id = lines[i].endsWith("\r") ? lines[i].substring(0, lines[i].length() - 1) : lines[i];
            if (id.isEmpty()) throw new Recommender.ArtifactException("items.txt: line " + (i + 1) + " is empty");
            if (index.put(id, i + 1) != null) {
                throw new Recommender.ArtifactException("items.txt: item id '" + id + "' appears twice (line " + (i + 1) + ")");
            }
            items.add(id);
        }
        return new ItemIds(items, index, null, null);
    }

    static ItemIds fromBinary(byte[] data, int numItems) throws Recommender.ArtifactException {
        if (data.length < HEADER) throw new Recommender.ArtifactException("items.bin is shorter than its header");
        ByteBuffer b = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < MAGIC.length; i++) {
            if (b.get(i) != MAGIC[i]) throw new Recommender.ArtifactException("items.bin: not an odrec-export id map");
        }
        int version = b.get(8), encoding = b.get(9), width = b.get(10);
        long count = b.getLong(16), base = b.getLong(24);
        if (version != 1) throw new Recommender.ArtifactException("items.bin: unsupported version " + version);
        if (count != numItems) {
            throw new Recommender.ArtifactException("items.bin holds " + count + " items but manifest.json says num_items "
                    + numItems + " (mismatched artifact)");
        }
        long[] ids = new long[numItems];
        int pos = HEADER;
        if (encoding == FIXED && width >= 1 && width <= 8) {
            if ((long) data.length - HEADER != count * width) throw new Recommender.ArtifactException("items.bin: wrong payload size");
            for (int i = 0; i < numItems; i++, pos += width) {
                long v = 0;
                for (int j = width - 1; j >= 0; j--) v = (v << 8) | (data[pos + j] & 0xFF);
                ids[i] = base + v;
            }
        } else if (encoding == DELTA) {
            long prev = base;
            for (int i = 0; i < numItems; i++) {
                long z = 0;
                for (int shift = 0; ; shift += 7) {
                    if (pos >= data.length || shift > 63) throw new Recommender.ArtifactException("items.bin: truncated or malformed varint");
                    int x = data[pos++] & 0xFF;
                    z |= (long) (x & 0x7F) << shift;
                    if ((x & 0x80) == 0) break;
                }
                prev += (z >>> 1) ^ -(z & 1);
                ids[i] = prev;
            }
            if (pos != data.length) throw new Recommender.ArtifactException("items.bin: bytes left after " + numItems + " ids");
        } else {
            throw new Recommender.ArtifactException("items.bin: unknown encoding " + encoding);
        }
        int[] byId = sortedById(ids);
        for (int i = 1; i < byId.length; i++) {
            if (ids[byId[i]] == ids[byId[i - 1]]) {
                throw new Recommender.ArtifactException("items.bin: item id " + ids[byId[i]] + " appears twice");
            }
        }
        return new ItemIds(null, null, ids, byId);
    }

    /** Indices 0..n-1 ordered by id (a merge sort over primitives: no boxing for large catalogues). */
    private static int[] sortedById(long[] ids) {
        int n = ids.length;
        int[] a = new int[n], tmp = new int[n];
        for (int i = 0; i < n; i++) a[i] = i;
        for (int width = 1; width < n; width *= 2) {
            for (int lo = 0; lo < n - width; lo += 2 * width) {
                int mid = lo + width, hi = Math.min(lo + 2 * width, n), i = lo, j = mid, k = lo;
                while (i < mid && j < hi) tmp[k++] = ids[a[i]] <= ids[a[j]] ? a[i++] : a[j++];
                while (i < mid) tmp[k++] = a[i++];
                while (j < hi) tmp[k++] = a[j++];
                System.arraycopy(tmp, lo, a, lo, hi - lo);
            }
        }
        return a;
    }

    int size() {
        return text != null ? text.size() : ids.length;
    }

    /** Raw id of model index 1..N. */
    String raw(int index) {
        return text != null ? text.get(index - 1) : Long.toString(ids[index - 1]);
    }

    /** Model index of a raw id, or 0 when the catalogue does not hold it. */
    int index(String raw) {
        if (text != null) {
            Integer i = textIndex.get(raw);
            return i == null ? 0 : i;
        }
        long id;
        try {
            id = Long.parseLong(raw);
        } catch (NumberFormatException e) {
            return 0;
        }
        if (!Long.toString(id).equals(raw)) return 0;  // "007" is not the id 7
        int lo = 0, hi = byId.length - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            long v = ids[byId[mid]];
            if (v < id) lo = mid + 1;
            else if (v > id) hi = mid - 1;
            else return byId[mid] + 1;
        }
        return 0;
    }

    /** The catalogue in index order, as strings (a view: no copy for integer ids). */
    List<String> asList() {
        if (text != null) return text;
        return new AbstractList<String>() {
            @Override public String get(int i) { return Long.toString(ids[i]); }
            @Override public int size() { return ids.length; }
        };
    }
}
