#include "cli/RepoCommands.hpp"

#include "auth/AccessPolicy.hpp"
#include "plugins/PluginLoader.hpp"
#include "update/Minisign.hpp"
#include "update/RepositoryIndex.hpp"
#include "update/Semver.hpp"
#include "update/TrustRoot.hpp"

#include <certconn/crypto.hpp>
#include <certconn/errno_message.hpp>
#include <certconn/time.hpp>

#include <boost/json.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <fstream>
#include <iostream>
#include <regex>

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX declares it nowhere

namespace certconn::host {

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace update;

namespace {

constexpr const char* kDraft = "index.draft.json";
constexpr std::size_t kMaxDraftSize = kMaxIndexSize;

fs::path need_dir(const ParsedOptions& o, const std::string& command) {
    if (o.positional.empty())
        throw std::invalid_argument(command + " needs the repository directory: certconnector " + command + " DIR ...");
    return o.positional[0];
}

unsigned number_option(const ParsedOptions& o, const std::string& name, unsigned fallback, unsigned min, unsigned max) {
    const auto v = o.value(name);
    if (!v) return fallback;
    unsigned n = 0;
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc{} || end != v->data() + v->size() || n < min || n > max)
        throw std::invalid_argument("--" + name + " must be a whole number from " + std::to_string(min) + " to " +
                                    std::to_string(max));
    return n;
}

/// The whole file, refused when larger than `max` (read no further than that).
std::string read_bounded(const fs::path& file, std::size_t max, const std::string& what) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw std::invalid_argument("cannot read " + what + " " + file.string());
    std::string data(max + 1, '\0');
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    data.resize(static_cast<std::size_t>(in.gcount()));
    if (data.size() > max)
        throw std::invalid_argument(what + " " + file.string() + " is larger than " + std::to_string(max) + " bytes");
    return data;
}

std::optional<std::string> read_if_exists(const fs::path& file, std::size_t max, const std::string& what) {
    std::error_code ec;
    if (!fs::exists(file, ec)) return std::nullopt;
    return read_bounded(file, max, what);
}

bool valid_repository_name(const std::string& s) {
    static const std::regex re("[a-z][a-z0-9-]{0,62}");
    return std::regex_match(s, re);
}

/// The draft: {"repository": NAME, "plugins": [entries]}.
struct Draft {
    std::string repository;
    std::vector<IndexEntry> entries;
};

Draft read_draft(const fs::path& dir) {
    const fs::path file = dir / kDraft;
    const std::string text = read_bounded(file, kMaxDraftSize, "draft");
    boost::system::error_code ec;
    const json::value v = json::parse(text, ec);
    if (ec || !v.is_object() || !v.as_object().contains("repository") || !v.at("repository").is_string() ||
        !v.as_object().contains("plugins") || !v.at("plugins").is_array())
        throw std::invalid_argument(file.string() + ": not a repository draft (run certconnector repo init first)");
    Draft d;
    d.repository = std::string(v.at("repository").as_string());
    for (const auto& e : v.at("plugins").as_array())
        d.entries.push_back(detail::parse_entry(e, file.string()));
    return d;
}

void write_draft(const fs::path& dir, const Draft& d) {
    json::array plugins;
    for (const auto& e : d.entries)
        plugins.push_back(entry_json(e));
    crypto::write_file_atomic(dir / kDraft,
                              json::serialize(json::object{{"repository", d.repository}, {"plugins", plugins}}) + "\n", 0644);
}

MinisignPublicKey read_public_key(const std::string& path_or_line) {
    std::error_code ec;
    if (fs::exists(path_or_line, ec)) {
        try {
            return parse_public_key(read_bounded(path_or_line, kMaxPublicKeyText, "public key"));
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(path_or_line + ": " + e.what());
        }
    }
    return parse_public_key(path_or_line);  // the bare base64 line
}

/// A directory removed with its contents when this goes out of scope.
class ScratchDir {
public:
    explicit ScratchDir(const fs::path& near) {
        std::string pattern = (near / ".repo-sign-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr)
            throw std::runtime_error("cannot create a directory in " + near.string() + ": " + sdk::errno_message(errno));
        path_ = pattern;
    }
    ~ScratchDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

/// Runs `argv` (no shell; PATH searched), waits, and returns its exit status; throws when it
/// cannot start. stdin stays the terminal's, so minisign can ask for a key's password.
int run_program(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));  // NOLINT: posix_spawn's argv is char* const[]
    args.push_back(nullptr);
    pid_t pid = 0;
    const int err = ::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
    if (err == ENOENT) throw std::runtime_error(argv[0] + " not found in PATH; install it (Debian: apt-get install minisign)");
    if (err != 0) throw std::runtime_error("cannot run " + argv[0] + ": " + sdk::errno_message(err));
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) throw std::runtime_error("waitpid for " + argv[0] + ": " + sdk::errno_message(errno));
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

std::string now_utc() {
    return sdk::utc_iso8601(std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()));
}

}  // namespace

int repo_init(const ParsedOptions& o) {
    const fs::path dir = need_dir(o, "repo init");
    const auto key_args = o.all("key");
    if (key_args.empty()) throw std::invalid_argument("repo init needs at least one --key PUB (a minisign .pub file)");
    if (!o.value("threshold")) throw std::invalid_argument("repo init needs --threshold K (how many keys must sign)");
    const unsigned threshold = number_option(o, "threshold", 1, 1, static_cast<unsigned>(key_args.size()));
    const unsigned days = number_option(o, "expires-days", 365, 1, 36500);
    const unsigned version = number_option(o, "root-version", 1, 1, 1000000);
    std::string repository = o.value("repository").value_or(fs::absolute(dir).lexically_normal().filename().string());
    if (!valid_repository_name(repository))
        throw std::invalid_argument("repository name '" + repository +
                                    "' must match [a-z][a-z0-9-]{0,62}; give one with --repository NAME");

    json::array keys;
    for (const auto& k : key_args) {
        const MinisignPublicKey key = read_public_key(k);
        for (const auto& other : keys)
            if (other.at("id").as_string() == key.key_id_hex())
                throw std::invalid_argument("key " + key.key_id_hex() + " is given twice");
        keys.push_back(json::object{{"id", key.key_id_hex()}, {"public_key", key.base64()}});
    }
    const auto expires = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()) + std::chrono::days{days};
    const json::object root{
        {"type", "certconnector-root"}, {"version", version}, {"expires", sdk::utc_iso8601(expires)},
        {"threshold", threshold},       {"keys", keys},       {"repositories", json::array{json::string(repository)}}};
    const std::string text = json::serialize(root) + "\n";
    detail::parse_root_unverified(text);  // what we write, we can read

    const fs::path file = dir / (std::to_string(version) + ".root.json");
    if (fs::exists(file))
        throw std::invalid_argument(file.string() + " exists; a root is never rewritten (rotate: --root-version N+1)");
    fs::create_directories(dir / "plugins");
    crypto::write_file_atomic(file, text, 0644);
    if (!fs::exists(dir / kDraft)) write_draft(dir, Draft{repository, {}});

    std::cout << "wrote " << file.string() << " (root version " << version << ", " << threshold << " of " << keys.size()
              << " keys, expires " << sdk::utc_iso8601(expires) << ", repository '" << repository << "')\n"
              << "sign it (at least " << threshold << " keys"
              << (version > 1 ? ", and a threshold of the previous root's keys" : "") << "):\n  certconnector repo sign "
              << dir.string() << " " << file.string();
    for (std::size_t i = 0; i < key_args.size(); ++i)
        std::cout << " --secret-key KEY" << i + 1;
    std::cout << "\nor by hand, then concatenate:\n";
    for (std::size_t i = 0; i < key_args.size(); ++i)
        std::cout << "  minisign -S -s KEY" << i + 1 << " -m " << file.string() << " -x " << file.string() << ".minisig." << i + 1
                  << "\n";
    std::cout << "  cat " << file.string() << ".minisig.* > " << file.string() << ".minisig\n";
    return 0;
}

int repo_add(const ParsedOptions& o) {
    const fs::path dir = need_dir(o, "repo add");
    if (o.positional.size() < 2)
        throw std::invalid_argument("repo add needs plugin files: certconnector repo add DIR FILE.so ...");
    const std::string min_host = o.value("min-host").value_or("");
    if (!min_host.empty() && !is_semver(min_host))
        throw std::invalid_argument("--min-host '" + min_host + "' is not a semantic version like 0.4.0");
    const unsigned rollout = number_option(o, "rollout", 100, 0, 100);
    Draft draft = read_draft(dir);
    const LoaderPolicy policy = LoaderPolicy::for_service_account("");
    for (std::size_t i = 1; i < o.positional.size(); ++i) {
        const fs::path file = o.positional[i];
        PluginFileReport report;
        const auto lib = open_plugin(file, policy, report);
        if (!lib) throw std::runtime_error("cannot add " + file.string() + ": " + report.reason);
        const PluginIdentity& id = lib->identity;
        const std::string bytes = read_bounded(file, kMaxPluginSize, "plugin");
        IndexEntry e;
        e.kind = kind_name(id.kind);
        e.name = id.name;
        e.version = id.version;
        e.abi_major = id.abi_major;
        e.abi_minor = id.abi_minor;
        e.min_host = min_host;
        e.release_date = id.release_date;
        e.size = bytes.size();
        e.sha256 = sha256_hex(bytes);
        const std::string stored = e.kind + "-" + e.name + "-" + e.version + ".so";
        e.url = "plugins/" + stored;
        e.rollout_percent = rollout;
        detail::parse_entry(entry_json(e), file.string());  // the index will accept it

        const fs::path target = dir / "plugins" / stored;
        if (auto existing = read_if_exists(target, kMaxPluginSize, "plugin")) {
            if (sha256_hex(*existing) != e.sha256)
                throw std::invalid_argument(target.string() + " already holds other bytes for " + e.kind + " '" + e.name + "' " +
                                            e.version + "; a published version never changes, build a new version");
        } else {
            crypto::write_file_atomic(target, bytes, 0644);
        }
        std::erase_if(draft.entries,
                      [&](const IndexEntry& x) { return x.kind == e.kind && x.name == e.name && x.version == e.version; });
        draft.entries.push_back(e);
        std::cout << "added " << e.kind << " '" << e.name << "' " << e.version << " (SDK " << e.abi_major << "." << e.abi_minor
                  << ", released " << e.release_date << ", " << e.size << " bytes, sha256 " << e.sha256 << ") as " << e.url
                  << "\n";
    }
    write_draft(dir, draft);
    std::cout << "draft " << (dir / kDraft).string() << ": " << draft.entries.size()
              << " plugin(s); publish with: certconnector repo publish " << dir.string() << "\n";
    return 0;
}

int repo_publish(const ParsedOptions& o) {
    const fs::path dir = need_dir(o, "repo publish");
    const unsigned days = number_option(o, "expires-days", 30, 1, 3650);
    const Draft draft = read_draft(dir);
    const fs::path index_file = dir / "index.json";
    std::uint64_t sequence = 1;
    if (auto previous = read_if_exists(index_file, kMaxIndexSize, "index")) {
        try {
            sequence = detail::parse_index_unverified(*previous).sequence + 1;
        } catch (const UpdateRefused& e) {
            throw std::invalid_argument(index_file.string() + " cannot be read, so the next sequence is unknown: " + e.what());
        }
    }
    json::array plugins;
    for (const auto& e : draft.entries) {
        // Every file the index names must be here, exactly as recorded.
        if (e.url.rfind("https://", 0) != 0) {
            const auto bytes = read_if_exists(dir / e.url, kMaxPluginSize, "plugin");
            if (!bytes) throw std::invalid_argument((dir / e.url).string() + " is missing (run repo add again)");
            if (bytes->size() != e.size || sha256_hex(*bytes) != e.sha256)
                throw std::invalid_argument((dir / e.url).string() + " changed since repo add (size or SHA-256 differ)");
        }
        plugins.push_back(entry_json(e));
    }
    const auto issued = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    const auto expires = issued + std::chrono::days{days};
    const json::object index{{"type", "certconnector-index"},      {"repository", draft.repository},       {"sequence", sequence},
                             {"issued", sdk::utc_iso8601(issued)}, {"expires", sdk::utc_iso8601(expires)}, {"plugins", plugins}};
    const std::string text = json::serialize(index) + "\n";
    detail::parse_index_unverified(text);
    crypto::write_file_atomic(index_file, text, 0644);
    std::error_code ec;
    if (fs::remove(dir / "index.json.minisig", ec))
        std::cout << "removed the old index.json.minisig (it signed the previous index)\n";
    std::cout << "wrote " << index_file.string() << ": repository '" << draft.repository << "', sequence " << sequence << ", "
              << draft.entries.size() << " plugin(s), expires " << sdk::utc_iso8601(expires) << "\n"
              << "sign it: certconnector repo sign " << dir.string() << " " << index_file.string() << " --secret-key KEY ...\n";
    return 0;
}

int repo_sign(const ParsedOptions& o) {
    const fs::path dir = need_dir(o, "repo sign");
    if (o.positional.size() != 2)
        throw std::invalid_argument("repo sign needs the file to sign: certconnector repo sign DIR FILE");
    fs::path file = o.positional[1];
    if (!fs::exists(file) && fs::exists(dir / file)) file = dir / file;
    if (!fs::is_regular_file(file)) throw std::invalid_argument(file.string() + " is not a file");
    const auto secret_keys = o.all("secret-key");
    if (secret_keys.empty()) throw std::invalid_argument("repo sign needs at least one --secret-key KEY (minisign secret key)");
    const fs::path sig_file = file.string() + ".minisig";

    std::string all;
    std::size_t count = 0;
    if (o.has("append")) {
        if (auto existing = read_if_exists(sig_file, kMaxSignatureText, "signatures")) {
            count += parse_signatures(*existing).size();
            all = *existing;
            if (!all.empty() && all.back() != '\n') all += '\n';
        }
    }
    const ScratchDir scratch(file.parent_path().empty() ? fs::path(".") : file.parent_path());
    const std::string comment = "certconnector file:" + file.filename().string() + " signed:" + now_utc();
    for (std::size_t i = 0; i < secret_keys.size(); ++i) {
        const fs::path out = scratch.path() / ("sig-" + std::to_string(i));
        const int status =
            run_program({"minisign", "-S", "-s", secret_keys[i], "-m", file.string(), "-x", out.string(), "-t", comment});
        if (status != 0)
            throw std::runtime_error("minisign could not sign " + file.string() + " with " + secret_keys[i] + " (exit " +
                                     std::to_string(status) + ")");
        const std::string sig = read_bounded(out, kMaxSignatureText, "signature");
        const auto parsed = parse_signatures(sig);  // exactly what the verifier will read
        std::cout << "signed " << file.filename().string() << " with key " << key_id_hex(parsed.at(0).key_id) << " ("
                  << secret_keys[i] << ")\n";
        all += sig;
        count += parsed.size();
    }
    parse_signatures(all);  // bounded: at most kMaxSignatures in kMaxSignatureText
    crypto::write_file_atomic(sig_file, all, 0644);
    std::cout << "wrote " << sig_file.string() << ": " << count << " signature(s)\n";
    return 0;
}

int repo_verify(const ParsedOptions& o) {
    const fs::path dir = need_dir(o, "repo verify");
    const auto root_arg = o.value("root");
    if (!root_arg)
        throw std::invalid_argument("repo verify needs --root ROOT.json (the root you trust; ROOT.json.minisig beside it)");
    std::uint64_t last_sequence = 0;
    if (auto v = o.value("last-sequence")) {
        const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), last_sequence);
        if (ec != std::errc{} || end != v->data() + v->size()) throw std::invalid_argument("--last-sequence must be a number");
    }
    const fs::path root_file = *root_arg;
    try {
        TrustRoot root = load_initial_root(read_bounded(root_file, kMaxRootSize, "root"),
                                           read_bounded(root_file.string() + ".minisig", kMaxSignatureText, "root signatures"));
        const unsigned first = static_cast<unsigned>(root.version);
        root = follow_root_chain(root, [&](std::uint64_t v) -> std::optional<std::pair<std::string, std::string>> {
            const fs::path f = dir / (std::to_string(v) + ".root.json");
            auto bytes = read_if_exists(f, kMaxRootSize, "root");
            if (!bytes) return std::nullopt;
            return std::pair{*bytes, read_bounded(f.string() + ".minisig", kMaxSignatureText, "root signatures")};
        });
        const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
        if (now >= root.expires)
            throw UpdateRefused(RefusalReason::expired,
                                "root version " + std::to_string(root.version) + " expired at " + sdk::utc_iso8601(root.expires));
        std::cout << "trust root version " << root.version
                  << (root.version != first ? " (rotated from " + std::to_string(first) + ")" : "") << ": " << root.threshold
                  << " of " << root.keys.size() << " keys, expires " << sdk::utc_iso8601(root.expires) << "\n";
        const RepositoryIndex index =
            verify_index(root, read_bounded(dir / "index.json", kMaxIndexSize, "index"),
                         read_bounded(dir / "index.json.minisig", kMaxSignatureText, "index signatures"), last_sequence, now);
        std::cout << "index of repository '" << index.repository << "': sequence " << index.sequence << ", issued "
                  << sdk::utc_iso8601(index.issued) << ", expires " << sdk::utc_iso8601(index.expires) << ", "
                  << index.entries.size() << " plugin(s)\n";
        for (const auto& e : index.entries) {
            std::string file_state = "remote";
            if (e.url.rfind("https://", 0) != 0) {
                const auto bytes = read_if_exists(dir / e.url, kMaxPluginSize + 1, "plugin");
                if (!bytes) {
                    file_state = "missing";
                } else if (bytes->size() != e.size) {
                    throw UpdateRefused(RefusalReason::tampered_size, (dir / e.url).string() + ": " +
                                                                          std::to_string(bytes->size()) +
                                                                          " bytes, the index says " + std::to_string(e.size));
                } else if (sha256_hex(*bytes) != e.sha256) {
                    throw UpdateRefused(RefusalReason::tampered_hash,
                                        (dir / e.url).string() + ": SHA-256 differs from the index's " + e.sha256);
                } else {
                    file_state = "file ok";
                }
            }
            std::cout << "  " << e.kind << " '" << e.name << "' " << e.version << "  SDK " << e.abi_major << "." << e.abi_minor
                      << (e.min_host.empty() ? "" : "  host >= " + e.min_host) << "  released " << e.release_date << "  "
                      << e.size << " bytes  rollout " << e.rollout_percent << "%  " << e.url << "  (" << file_state << ")\n";
        }
    } catch (const UpdateRefused& e) {
        std::cerr << "certconnector repo verify: refused (" << refusal_reason_name(e.reason) << "): " << e.what() << "\n";
        return 1;
    }
    return 0;
}

}  // namespace certconn::host
