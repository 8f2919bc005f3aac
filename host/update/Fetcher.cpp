#include "update/Fetcher.hpp"

#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include <curl/curl.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>

namespace certconn::host::update {

namespace {

using Clock = std::chrono::steady_clock;

std::string fetch_file(const std::string& url, const FetchOptions& options) {
    auto parsed = boost::urls::parse_uri(url);
    if (!parsed || !parsed->host().empty()) throw FetchError(FetchFailure::Failed, url + ": not a local file:/// URL");
    const std::string path = parsed->path();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        const int err = errno;
        throw FetchError(err == ENOENT ? FetchFailure::NotFound : FetchFailure::Failed,
                         url + ": cannot open: " + std::strerror(err));  // NOLINT(concurrency-mt-unsafe): glibc's is thread-safe
    }
    std::unique_ptr<int, void (*)(const int*)> guard(new int(fd), [](const int* f) {
        ::close(*f);
        delete f;
    });
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw FetchError(FetchFailure::Failed, url + ": not a regular file");
    std::string out;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw FetchError(FetchFailure::Failed, url + ": read failed");
        if (n == 0) break;
        if (out.size() + static_cast<std::size_t>(n) > options.max_bytes)
            throw FetchError(FetchFailure::Oversize, url + ": larger than " + std::to_string(options.max_bytes) + " bytes");
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

struct Transfer {
    std::string body;
    std::size_t max_bytes = 0;
    bool oversize = false;
    bool stalled = false;
    std::chrono::seconds stall_timeout{30};
    curl_off_t last_received = 0;
    Clock::time_point last_progress = Clock::now();
};

std::size_t on_data(char* data, std::size_t size, std::size_t count, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const std::size_t n = size * count;
    if (t->body.size() + n > t->max_bytes) {
        t->oversize = true;
        return 0;  // aborts the transfer at once (CURLE_WRITE_ERROR)
    }
    t->body.append(data, n);
    return n;
}

int on_progress(void* user, curl_off_t /*dltotal*/, curl_off_t dlnow, curl_off_t /*ultotal*/, curl_off_t /*ulnow*/) {
    auto* t = static_cast<Transfer*>(user);
    const auto now = Clock::now();
    if (dlnow != t->last_received) {
        t->last_received = dlnow;
        t->last_progress = now;
    } else if (now - t->last_progress >= t->stall_timeout) {
        t->stalled = true;
        return 1;  // aborts (CURLE_ABORTED_BY_CALLBACK)
    }
    return 0;
}

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string fetch_https(const std::string& url, const FetchOptions& options) {
    global_init();
    std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) throw FetchError(FetchFailure::Failed, url + ": cannot start a transfer");
    Transfer t;
    t.max_bytes = options.max_bytes;
    t.stall_timeout = options.stall_timeout;
    char error[CURL_ERROR_SIZE] = {};
    CURL* h = curl.get();
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options.ca_bundle.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options.ca_bundle.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, static_cast<long>(options.stall_timeout.count()));
    curl_easy_setopt(h, CURLOPT_TIMEOUT, static_cast<long>(options.total_timeout.count()));
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options.max_bytes));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "certconnector-update/" CERTCONN_VERSION);
    const CURLcode rc = curl_easy_perform(h);
    if (t.oversize || rc == CURLE_FILESIZE_EXCEEDED)
        throw FetchError(FetchFailure::Oversize,
                         url + ": the server sent more than " + std::to_string(options.max_bytes) + " bytes; download stopped");
    if (t.stalled)
        throw FetchError(FetchFailure::Stalled, url + ": nothing received for " + std::to_string(options.stall_timeout.count()) +
                                                    " s; download abandoned");
    if (rc != CURLE_OK)
        throw FetchError(FetchFailure::Failed,
                         url + ": " + (error[0] ? std::string(error) : std::string(curl_easy_strerror(rc))));
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status == 404 || status == 410)
        throw FetchError(FetchFailure::NotFound, url + ": not found (HTTP " + std::to_string(status) + ")");
    if (status < 200 || status > 299) throw FetchError(FetchFailure::Failed, url + ": HTTP " + std::to_string(status));
    return std::move(t.body);
}

}  // namespace

std::string url_scheme(const std::string& url) {
    auto parsed = boost::urls::parse_uri(url);
    if (!parsed) return {};
    std::string s(parsed->scheme());
    for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string fetch(const std::string& url, const FetchOptions& options) {
    const std::string scheme = url_scheme(url);
    if (scheme == "file") return fetch_file(url, options);
    if (scheme == "https") return fetch_https(url, options);
    throw FetchError(FetchFailure::Failed, url + ": only https:// and file:// URLs are fetched");
}

std::string resolve_url(const std::string& base, const std::string& reference) {
    auto b = boost::urls::parse_uri(base);
    if (!b) throw std::invalid_argument("not a URL: '" + base + "'");
    auto r = boost::urls::parse_uri_reference(reference);
    if (!r) throw std::invalid_argument("not a URL reference: '" + reference + "'");
    boost::urls::url out;
    if (auto rc = boost::urls::resolve(*b, *r, out); !rc)
        throw std::invalid_argument("cannot resolve '" + reference + "' against '" + base + "'");
    return std::string(out.buffer());
}

}  // namespace certconn::host::update
