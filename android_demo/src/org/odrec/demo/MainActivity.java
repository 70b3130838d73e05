package org.odrec.demo;

import android.app.Activity;
import android.os.Bundle;
import android.text.Editable;
import android.text.TextUtils;
import android.text.TextWatcher;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.EditText;
import android.widget.ListView;
import android.widget.TextView;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * One screen: the catalogue (searchable list of raw item ids), the current session, and the model's
 * top-k next items with scores and the median inference time. All model work runs on one background
 * thread; the UI thread only renders.
 */
public class MainActivity extends Activity {
    private static final String ASSET_DIR = "artifact/";
    private static final int TIMING_WINDOW = 20;

    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private final List<String> session = new ArrayList<>();
    private final ArrayDeque<Long> timings = new ArrayDeque<>();
    private volatile Recommender rec;

    private TextView modelInfo, sessionView, results;
    private ArrayAdapter<String> adapter;

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        setContentView(R.layout.activity_main);
        modelInfo = (TextView) findViewById(R.id.model_info);
        sessionView = (TextView) findViewById(R.id.session);
        results = (TextView) findViewById(R.id.results);
        ListView list = (ListView) findViewById(R.id.catalogue);
        adapter = new ArrayAdapter<>(this, android.R.layout.simple_list_item_1, new ArrayList<String>());
        list.setAdapter(adapter);
        list.setOnItemClickListener((parent, view, position, id) -> onItemTapped(adapter.getItem(position)));
        ((Button) findViewById(R.id.clear)).setOnClickListener(v -> {
            session.clear();
            showSession();
            recommend();
        });
        ((EditText) findViewById(R.id.search)).addTextChangedListener(new TextWatcher() {
            @Override public void beforeTextChanged(CharSequence s, int a, int b, int c) { }
            @Override public void onTextChanged(CharSequence s, int a, int b, int c) { adapter.getFilter().filter(s); }
            @Override public void afterTextChanged(Editable s) { }
        });
        worker.execute(this::loadModel);  // once, off the UI thread
    }

    @Override
    protected void onDestroy() {
        // Close on the worker, after any inference already queued: never under a running session.
        worker.execute(() -> {
            if (rec != null) rec.close();
        });
        worker.shutdown();
        super.onDestroy();
    }

    private void loadModel() {
        try {
            long t0 = System.nanoTime();
            Recommender r = Recommender.load(name -> getAssets().open(ASSET_DIR + name), 2);
            long loadMs = (System.nanoTime() - t0) / 1_000_000;
            rec = r;
            String info = String.format(Locale.US,
                    "model %.1f KB · %d items · top-%d · max session %d · onnxruntime %s · loaded in %d ms",
                    r.modelBytes() / 1024.0, r.numItems(), r.topK(), r.maxSessionLength(), Recommender.ortVersion(), loadMs);
            List<String> acc = r.accuracyFigures();
            if (!acc.isEmpty()) info += "\naccuracy (manifest): " + TextUtils.join(" · ", acc);
            final String text = info;
            runOnUiThread(() -> {
                modelInfo.setText(text);
                adapter.addAll(r.catalogue());
                recommend();
            });
        } catch (Recommender.ArtifactException e) {
            runOnUiThread(() -> modelInfo.setText("Cannot load the bundled artifact:\n" + e.getMessage()));
        }
    }

    private void onItemTapped(String rawId) {
        session.add(rawId);
        showSession();
        recommend();
    }

    private void showSession() {
        sessionView.setText(session.isEmpty() ? getString(R.string.session_empty)
                : "Session (" + session.size() + "): " + TextUtils.join(" → ", session));
    }

    /** Runs the model on a copy of the session in the background, then renders on the UI thread. */
    private void recommend() {
        final Recommender r = rec;
        if (r == null) return;
        final List<String> snapshot = new ArrayList<>(session);
        worker.execute(() -> {
            String text;
            try {
                Recommender.Result res = r.recommend(snapshot);
                text = render(r, snapshot, res);
            } catch (Exception e) {
                text = "Inference failed: " + e.getMessage();
            }
            final String shown = text;
            runOnUiThread(() -> results.setText(shown));
        });
    }

    private String render(Recommender r, List<String> snapshot, Recommender.Result res) {
        timings.addLast(res.nanos);
        while (timings.size() > TIMING_WINDOW) timings.removeFirst();
        long[] sorted = new long[timings.size()];
        int i = 0;
        for (long t : timings) sorted[i++] = t;
        Arrays.sort(sorted);
        double median = sorted.length % 2 == 1 ? sorted[sorted.length / 2]
                : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2.0;
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.US, "inference %.2f ms (median of last %d runs)%n",
                median / 1e6, sorted.length));
        if (snapshot.size() > r.maxSessionLength()) {
            b.append("using the most recent ").append(r.maxSessionLength()).append(" items\n");
        }
        b.append(snapshot.isEmpty() ? "Top items for an empty session:\n" : "Next items:\n");
        int rank = 1;
        for (Recommender.Item it : res.items) {
            b.append(String.format(Locale.US, "%2d. %-20s %9.4f%n", rank++, it.rawId, it.score));
        }
        return b.toString();
    }
}
