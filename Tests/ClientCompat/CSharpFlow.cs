// The official C# client (Algorithmia on NuGet, built from its source with mono's mcs against
// Debian's Newtonsoft.Json) through the gateway as the confined team: algorithm calls with
// options, data files and directories, refusals. Tests/ClientCompat/run.sh runs it when
// CSHARP_CLIENT_DIR names a checkout of the client's source (NuGet is out of CI's reach).
// Usage: ALGORITHMIA_API=... ALGORITHMIA_API_KEY=<a key confined to ROOT> mono CSharpFlow.exe ROOT OUTSIDE
using System;
using System.Collections.Generic;
using System.Linq;
using Algorithmia;
using Newtonsoft.Json.Linq;

public static class CSharpFlow
{
    static void Expect(string label, object actual, object expected)
    {
        bool same = actual is byte[] a && expected is byte[] e ? a.SequenceEqual(e) : Equals(actual, expected);
        if (!same)
        {
            Console.Error.WriteLine("FAIL: c# " + label + ": got " + actual + ", expected " + expected);
            Environment.Exit(1);
        }
    }

    /// The message of the exception a call throws; this client words it "WHAT - reason: MESSAGE".
    static string Refusal(string label, Action call)
    {
        try { call(); }
        catch (Exception e) { return e.Message; }
        Console.Error.WriteLine("FAIL: c# " + label + ": not refused");
        Environment.Exit(1);
        return null;
    }

    public static int Main(string[] args)
    {
        string root = args[0], outside = args[1];
        var client = new Client(Environment.GetEnvironmentVariable("ALGORITHMIA_API_KEY"), Environment.GetEnvironmentVariable("ALGORITHMIA_API"));
        Expect("text", client.algo("algo://demo/Hello/0.1.1").pipe<string>("C#").result, "Hello C#");
        var json = (JObject)client.algo("util/Echo/1.0.0").pipe<object>(new Dictionary<string, int[]> { ["a"] = new[] { 1, 2 } }).result;
        Expect("JSON", json.ToString(Newtonsoft.Json.Formatting.None), "{\"a\":[1,2]}");
        Expect("binary", client.algo("util/Echo/1.0.0").pipe<byte[]>(new byte[] { 0, 1, 255 }).result, new byte[] { 0, 1, 255 });
        Expect("pipeJson", client.algo("util/Echo/1.0.0").pipeJson<string>("\"x\"").result, "x");
        Expect("options", client.algo("demo/Hello/0.1.1").setOptions(timeout: 20, stdout: true).pipe<string>("options").result, "Hello options");
        Expect("raw output", System.Text.Encoding.UTF8.GetString((byte[])client.algo("util/Echo/1.0.0").setOptions(outputType: AlgorithmOutputType.RAW).pipe<string>("raw text").result), "\"raw text\"");   // every input goes as JSON
        Expect("input outside the prefix", Refusal("input outside", () => client.algo("util/Echo/1.0.0").pipe<string>(outside + "/secret")),
            "Algorithm call failed - reason: algorithm input references " + outside + "/secret, outside client 'limited' data prefixes (data://.my/limited/)");
        Expect("unknown algorithm", Refusal("unknown algorithm", () => client.algo("demo/Nope/1.0.0").pipe<string>("x")),
            "Algorithm call failed - reason: algorithm algo://demo/Nope/1.0.0 not found");
        Console.WriteLine("ok   c#: algorithm calls (algo://, text, JSON, binary, pipeJson, timeout and stdout, raw output), refusals");

        var top = client.dir(root);
        if (!top.exists()) top.create();
        var dir = client.dir(root + "/cs dir");   // a space
        if (dir.exists()) dir.delete(true);
        dir.create();
        Expect("dir exists", dir.exists(), true);
        var text = dir.file("note.txt");
        text.put("h\u00e9llo");
        Expect("file getString", text.getString(), "h\u00e9llo");
        Expect("file exists", text.exists(), true);
        var blob = dir.file("blob.bin");
        blob.put(new byte[] { 9, 0, 255 });
        Expect("binary file", blob.getBytes(), new byte[] { 9, 0, 255 });
        Expect("missing file", dir.file("missing").exists(), false);
        var names = new List<string>();
        foreach (DataFile f in dir.files()) names.Add(f.getName());
        Expect("listing", string.Join(",", names), "blob.bin,note.txt");
        var dirs = new List<string>();
        foreach (DataDirectory d in top.dirs()) dirs.Add(d.getName());
        Expect("directories", dirs.Contains("cs dir"), true);
        Expect("write outside the prefix", Refusal("write outside", () => client.file(outside + "/x").put("no")).EndsWith("client 'limited' may not access " + outside + "/x: outside its data prefixes (data://.my/limited/)"), true);
        var escape = root + "/../" + outside.Substring(outside.LastIndexOf('/') + 1) + "/x";
        Expect("read outside the prefix", Refusal("read outside", () => client.file(escape).getString()).EndsWith("client 'limited' may not access " + outside + "/x: outside its data prefixes (data://.my/limited/)"), true);
        blob.delete();
        Expect("file deleted", blob.exists(), false);
        Expect("dir delete, not empty", Refusal("delete not forced", () => dir.delete(false)).EndsWith("directory " + root + "/cs dir is not empty; delete with force=true"), true);
        dir.delete(true);
        Expect("dir gone", dir.exists(), false);
        var stranger = new Client("not-a-key", Environment.GetEnvironmentVariable("ALGORITHMIA_API"));
        Expect("unknown key", Refusal("unknown key", () => stranger.algo("demo/Hello/0.1.1").pipe<string>("x")),
            "Algorithm call failed - reason: authorization failed: unknown algogate key");
        Console.WriteLine("ok   c#: directories (a name with a space; create, exists, list, delete forced and not), files (text, binary, exists, delete), refusals");
        return 0;
    }
}
