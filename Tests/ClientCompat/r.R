# The official R client (algorithmia, on Debian's r-cran-httr, -rjson, -base64enc, -readr, -here)
# through the gateway as the confined team: algorithm calls with options, data files and
# directories, refusals. Tests/ClientCompat/run.sh runs it when R_CLIENT_DIR names a checkout of
# the client's source (CRAN is out of CI's reach).
# Usage: ALGORITHMIA_API=... ALGORITHMIA_API_KEY=<a key confined to ROOT> [ALGORITHMIA_MANAGE_KEY=<a key
# with the manage scope>] Rscript r.R CLIENT_DIR ROOT OUTSIDE [OWNER]
# With a manage key, it also drives the management API through the client's methods under OWNER.
args <- commandArgs(trailingOnly = TRUE)
clientDir <- args[1]; root <- args[2]; outside <- args[3]
setwd(clientDir)   # the client finds its bundled certificates with here::here()
for (name in c("Client.r", "Acl.r", "data_utilities.r", "Algorithm.r", "DataFile.r", "DataDirectory.r")) {
  source(file.path(clientDir, "R", name))
}

expect <- function(label, actual, expected) {
  if (!identical(actual, expected)) {
    cat("FAIL: r ", label, ": got ", deparse(actual), ", expected ", deparse(expected), "\n", sep = "", file = stderr())
    quit(status = 1)
  }
}
# The message of the error a call stops with; the client pastes the gateway's envelope into it.
refusal <- function(label, call) {
  message <- tryCatch({ force(call); NA_character_ }, error = function(e) conditionMessage(e))
  if (is.na(message)) { cat("FAIL: r ", label, ": not refused\n", sep = "", file = stderr()); quit(status = 1) }
  message
}
mentions <- function(label, text, part) expect(label, grepl(part, text, fixed = TRUE), TRUE)

client <- getAlgorithmiaClient(Sys.getenv("ALGORITHMIA_API_KEY"))   # the bare key, as this client sends it
# Every call carries timeout=300, stdout=FALSE and output=default unless setOptions says otherwise.
expect("text", client$algo("algo://demo/Hello/0.1.1")$pipe("R")$result, "Hello R")
expect("JSON", rjson::toJSON(client$algo("util/Echo/1.0.0")$pipe(list(a = c(1, 2)))$result), '{"a":[1,2]}')
expect("binary", client$algo("util/Echo/1.0.0")$pipe(as.raw(c(0, 1, 255)))$result, as.raw(c(0, 1, 255)))
algo <- client$algo("demo/Hello/0.1.1")
algo$setOptions(timeout = 20, stdout = TRUE)
expect("options", algo$pipe("options")$result, "Hello options")
raw <- client$algo("util/Echo/1.0.0")
raw$setOptions(output = "raw")
expect("raw output", rawToChar(raw$pipe("raw text")), '"raw text"')
mentions("input outside the prefix", refusal("input outside", client$algo("util/Echo/1.0.0")$pipe(paste0(outside, "/secret"))),
         paste0("algorithm input references ", outside, "/secret, outside client 'limited' data prefixes (data://.my/limited/)"))
mentions("unknown algorithm", refusal("unknown algorithm", client$algo("demo/Nope/1.0.0")$pipe("x")),
         "algorithm algo://demo/Nope/1.0.0 not found")
cat("ok   r: algorithm calls (algo://, text, JSON, binary, timeout and stdout, raw output), refusals\n")

top <- client$dir(root)
if (!top$exists()) invisible(top$create())
dir <- client$dir(paste0(root, "/r dir"))   # a space, which this client sends as %20
if (dir$exists()) invisible(dir$delete(TRUE))
invisible(dir$create())
expect("dir exists", dir$exists(), TRUE)
text <- dir$file("note.txt")
invisible(text$put("h\u00e9llo"))
expect("file exists", text$exists(), TRUE)
expect("file getString", text$getString(), "h\u00e9llo")
json <- dir$file("doc.json")
invisible(json$putJson(list(k = 1)))
expect("file getJson", json$getJson(), list(k = 1))
blob <- dir$file("blob.bin")
invisible(blob$put(as.raw(c(9, 0, 255))))
expect("binary file", blob$getRaw(), as.raw(c(9, 0, 255)))
expect("missing file", dir$file("missing")$exists(), FALSE)
names <- c()
files <- dir$files()
while (files$hasNext()) {
  entry <- files$getNext()
  names <- c(names, entry$getName())
  expect("a listed file's time, read as %Y-%m-%dT%H:%M:%S.000Z", is.na(entry$last_modified), FALSE)
}
expect("listing", names, c("blob.bin", "doc.json", "note.txt"))
mentions("write outside the prefix", refusal("write outside", client$file(paste0(outside, "/x"))$put("no")),
         paste0("client 'limited' may not access ", outside, "/x: outside its data prefixes (data://.my/limited/)"))
expect("read outside the prefix", client$file(paste0(root, "/../", basename(outside), "/x"))$exists(), FALSE)
invisible(blob$delete())
expect("file deleted", blob$exists(), FALSE)
mentions("dir delete, not empty", refusal("delete not forced", dir$delete()),
         paste0("directory ", root, "/r dir is not empty; delete with force=true"))
invisible(dir$delete(TRUE))
expect("dir gone", dir$exists(), FALSE)
stranger <- getAlgorithmiaClient("not-a-key")
mentions("unknown key", refusal("unknown key", stranger$algo("demo/Hello/0.1.1")$pipe("x")), "authorization failed: unknown algogate key")
cat("ok   r: directories (a name with a space; create, exists, list, delete forced and not), files (text, JSON, binary, exists, delete), refusals\n")

manageKey <- Sys.getenv("ALGORITHMIA_MANAGE_KEY", unset = NA)
if (!is.na(manageKey)) {
  owner <- args[4]
  manager <- getAlgorithmiaClient(manageKey)
  name <- paste0("RFlow", as.integer(Sys.time()))
  created <- manager$createAlgorithm(owner, rjson::toJSON(list(name = name, details = list(label = "R"), settings = list(language = "r"))))
  expect("createAlgorithm", created$name, name)
  algoUrl <- paste0(owner, "/", name)
  expect("getAlgorithmObject", manager$getAlgorithmObject(algoUrl)$details$label, "R")
  expect("updateAlgorithm", manager$updateAlgorithm(algoUrl, rjson::toJSON(list(details = list(label = "renamed"))))$details$label, "renamed")
  expect("compileAlgorithm gives a build", nchar(manager$compileAlgorithm(algoUrl)$version_info$git_hash), 40L)
  published <- manager$publishAlgorithm(algoUrl, rjson::toJSON(list(version_info = list(version_type = "minor"))))
  expect("publishAlgorithm", published$version_info$semantic_version, "0.1.0")
  expect("listAlgoVersions", manager$listAlgoVersions(algoUrl)$results[[1]]$version_info$semantic_version, "0.1.0")
  builds <- manager$listAlgoBuilds(algoUrl)$results
  expect("getAlgoBuild", manager$getAlgoBuild(algoUrl, builds[[1]]$build_id)$status, "succeeded")
  expect("getAlgoBuildLogs", grepl("Build succeeded", manager$getAlgoBuildLogs(algoUrl, builds[[1]]$build_id)$logs, fixed = TRUE), TRUE)
  expect("getAlgoSCMStatus", manager$getAlgoSCMStatus(algoUrl)$scm_connection_status, "active")
  expect("the published version, called", manager$algo(paste0(algoUrl, "/0.1.0"))$pipe("hi")$result, "hi")
  expect("deleteAlgorithm", httr::status_code(manager$deleteAlgorithm(algoUrl)), 204L)
  cat("ok   r: createAlgorithm, getAlgorithmObject, updateAlgorithm, compileAlgorithm, publishAlgorithm, listAlgoVersions, listAlgoBuilds, getAlgoBuild, getAlgoBuildLogs, getAlgoSCMStatus, the new version called, deleteAlgorithm\n")
}
