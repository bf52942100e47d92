// The official Java client (com.algorithmia:algorithmia-client, built from its source against
// Debian's jars) through the gateway as the confined team: algorithm calls with options, data
// files and directories (whose paths this client percent-encodes whole), refusals.
// Tests/ClientCompat/run.sh runs it when JAVA_CLIENT_DIR names a checkout of the client's source:
// Maven Central is out of CI's reach.
// Usage: ALGORITHMIA_API=... ALGORITHMIA_API_KEY=<a key confined to ROOT> [ALGORITHMIA_MANAGE_KEY=<a key
// with the manage scope>] java -cp CLASSES JavaFlow.java ROOT OUTSIDE [OWNER]
// With a manage key, it also creates, updates, compiles and publishes an algorithm under OWNER,
// lists its versions and builds, reads a build's logs, and calls the published version.
import com.algorithmia.algo.Algorithmia;
import com.algorithmia.algo.AlgorithmiaClient;
import com.algorithmia.algo.AlgorithmExecutable.AlgorithmOutputType;
import com.algorithmia.algo.TypeToken;
import com.algorithmia.data.DataDirectory;
import com.algorithmia.data.DataFile;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

public class JavaFlow {
    static void expect(String label, Object actual, Object expected) {
        boolean same = actual instanceof byte[] && expected instanceof byte[]
            ? Arrays.equals((byte[]) actual, (byte[]) expected) : java.util.Objects.equals(actual, expected);
        if (!same) {
            System.err.println("FAIL: java " + label + ": got " + actual + ", expected " + expected);
            System.exit(1);
        }
    }

    interface Call { void run() throws Exception; }

    /** The refusal's message as this client reports it. A refused algorithm call it reports as
     * "STATUS unexpected API response: BODY" (or "404 not found: BODY"), read here as "STATUS MESSAGE". */
    static String refusal(String label, Call call) {
        try {
            call.run();
        } catch (Exception e) {
            String text = e.getMessage();
            int body = text.indexOf('{');
            if (body < 0 || !Character.isDigit(text.charAt(0))) return text;
            return text.substring(0, 3) + " " + com.google.gson.JsonParser.parseString(text.substring(body)).getAsJsonObject()
                .getAsJsonObject("error").get("message").getAsString();
        }
        System.err.println("FAIL: java " + label + ": not refused");
        System.exit(1);
        return null;
    }

    /** The management API as this client drives it (`publishAlgo` posts to `/version`, with `version_type`). */
    static void manage(AlgorithmiaClient client, String owner) throws Exception {
        String name = "JavaFlow" + System.currentTimeMillis();
        com.algorithmia.algo.Algorithm created = client.createAlgo(owner, "{\"name\":\"" + name + "\",\"details\":{\"label\":\"Java flow\"},"
            + "\"settings\":{\"algorithm_environment\":\"env\",\"license\":\"apl\",\"network_access\":\"full\",\"pipeline_enabled\":true,\"source_visibility\":\"open\"}}");
        expect("createAlgo", created.getName(), name);
        expect("getAlgo", client.getAlgo(owner, name).getDetails().getLabel(), "Java flow");
        expect("updateAlgo", client.updateAlgo(owner, name, "{\"details\":{\"label\":\"renamed\"},\"settings\":{\"source_visibility\":\"open\"}}").getDetails().getLabel(), "renamed");
        String hash = client.compileAlgo(owner, name).getVersionInfo().getGitHash();
        expect("compileAlgo gives a build", hash != null && hash.length() == 40, true);
        com.algorithmia.algo.Algorithm published = client.publishAlgo(owner, name, "{\"version_info\":{\"version_type\":\"major\",\"release_notes\":\"from Java\"}}");
        expect("publishAlgo", published.getVersionInfo().getSemanticVersion(), "1.0.0");
        expect("listAlgoVersions", client.listAlgoVersions(owner, name, null, null, null, null).getResults().get(0).getVersionInfo().getSemanticVersion(), "1.0.0");
        com.algorithmia.algo.AlgorithmBuildsList builds = client.listAlgoBuilds(owner, name, null, null);
        String buildId = builds.getResults().get(0).getBuildId();
        expect("getAlgoBuild", client.getAlgoBuild(owner, name, buildId).getStatus(), "succeeded");
        expect("getAlgoBuildLogs", client.getAlgoBuildLogs(owner, name, buildId).getLogs().contains("Build succeeded"), true);
        expect("the published version, called", client.algo(owner + "/" + name + "/1.0.0").pipe("hi").asString(), "hi");
        expect("getAlgoSCMStatus", client.getAlgoSCMStatus(owner, name).getScmConnectionStatus(), "active");
        expect("deleteAlgo", client.deleteAlgo(owner, name).getStatusLine().getStatusCode(), 204);
        expect("getAlgo after deleteAlgo", client.getAlgo(owner, name).getName(), null);
        System.out.println("ok   java: createAlgo, getAlgo, updateAlgo, compileAlgo, publishAlgo, listAlgoVersions, listAlgoBuilds, getAlgoBuild, getAlgoBuildLogs, the new version called, getAlgoSCMStatus, deleteAlgo");
    }

    public static void main(String[] args) throws Exception {
        String root = args[0], outside = args[1];
        AlgorithmiaClient client = Algorithmia.client(System.getenv("ALGORITHMIA_API_KEY"), System.getenv("ALGORITHMIA_API"));
        expect("text", client.algo("algo://demo/Hello/0.1.1").pipe("Java").asString(), "Hello Java");
        Map<String, List<Integer>> json = client.algo("util/Echo/1.0.0").pipe(Map.of("a", List.of(1, 2)))
            .as(new TypeToken<Map<String, List<Integer>>>() {});
        expect("JSON", json, Map.of("a", List.of(1, 2)));
        byte[] binary = {0, 1, (byte) 0xff};
        expect("binary", client.algo("util/Echo/1.0.0").pipe(binary).as(new TypeToken<byte[]>() {}), binary);
        expect("pipeJson", client.algo("util/Echo/1.0.0").pipeJson("\"x\"").asString(), "x");
        // setTimeout sends whole seconds (releases 1.0.8 to 1.0.10 converted the wrong way round
        // and sent timeout=0 for minutes, which the gateway reads as the default).
        expect("timeout in seconds", client.algo("demo/Hello/0.1.1").setTimeout(20L, TimeUnit.SECONDS).setStdout(false).pipe("options").asString(), "Hello options");
        expect("timeout in minutes", client.algo("demo/Hello/0.1.1").setTimeout(2L, TimeUnit.MINUTES).pipe("minutes").asString(), "Hello minutes");
        expect("raw output", client.algo("util/Echo/1.0.0").setOutputType(AlgorithmOutputType.RAW).pipe("raw text").getRawOutput(), "raw text");
        expect("input outside the prefix", refusal("input outside", () -> client.algo("util/Echo/1.0.0").pipe(outside + "/secret")),
            "403 algorithm input references " + outside + "/secret, outside client 'limited' data prefixes (data://.my/limited/)");
        expect("unknown algorithm", refusal("unknown algorithm", () -> client.algo("demo/Nope/1.0.0").pipe("x")),
            "404 algorithm algo://demo/Nope/1.0.0 not found");
        System.out.println("ok   java: algorithm calls (algo://, text, JSON, binary, pipeJson, timeout in seconds and in minutes, stdout, raw output), refusals");

        DataDirectory top = client.dir(root);
        if (!top.exists()) top.create();
        DataDirectory dir = client.dir(root + "/java dir");   // a space, which this client sends as '+'
        if (dir.exists()) dir.delete(true);   // left by an earlier run against the same simulator
        expect("dir exists before", dir.exists(), false);
        dir.create();
        expect("dir exists", dir.exists(), true);
        DataFile text = dir.file("note.txt");
        text.put("héllo");
        expect("file getString", text.getString(), "héllo");
        expect("file exists", text.exists(), true);
        DataFile blob = dir.file("blob.bin");
        blob.put(new byte[] {9, 0, (byte) 0xff});
        expect("binary file", blob.getBytes(), new byte[] {9, 0, (byte) 0xff});
        expect("missing file", dir.file("missing").exists(), false);
        List<String> names = new ArrayList<>();
        for (DataFile f : dir.files()) names.add(f.getName());
        expect("listing", names, List.of("blob.bin", "note.txt"));
        List<String> dirs = new ArrayList<>();
        for (DataDirectory d : top.dirs()) dirs.add(d.getName());
        expect("directories", dirs.contains("java dir"), true);
        expect("write outside the prefix", refusal("write outside", () -> client.file(outside + "/x").put("no")),
            "403 client 'limited' may not access " + outside + "/x: outside its data prefixes (data://.my/limited/)");
        String escape = root + "/../" + outside.substring(outside.lastIndexOf('/') + 1) + "/x";
        expect("read outside the prefix", refusal("read outside", () -> client.file(escape).getString()),
            "403 client 'limited' may not access " + outside + "/x: outside its data prefixes (data://.my/limited/)");
        blob.delete();
        expect("file deleted", blob.exists(), false);
        expect("dir delete, not empty", refusal("delete not forced", () -> dir.delete(false)),
            "400 directory " + root + "/java dir is not empty; delete with force=true");
        dir.delete(true);
        expect("dir gone", dir.exists(), false);
        AlgorithmiaClient stranger = Algorithmia.client("not-a-key", System.getenv("ALGORITHMIA_API"));
        expect("unknown key", refusal("unknown key", () -> stranger.algo("demo/Hello/0.1.1").pipe("x")),
            "401 authorization failed: unknown algogate key");
        System.out.println("ok   java: directories (a name with a space; create, exists, list, delete forced and not), files (text, binary, exists, delete), refusals");
        String manageKey = System.getenv("ALGORITHMIA_MANAGE_KEY");
        if (manageKey != null) manage(Algorithmia.client(manageKey, System.getenv("ALGORITHMIA_API")), args[2]);
        stranger.close();
        client.close();
        System.exit(0);   // the HTTP client's reactor threads would otherwise keep the JVM up
    }
}
