#include "IntuneClient.hpp"

#include "Protocol.hpp"

#include <certconn/crypto.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>

namespace certconn::intune {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string lower(std::string s) {
    for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

constexpr std::chrono::seconds kDiscoveryThrottle{60};

}  // namespace

IntuneClient::IntuneClient(sdk::Host& host, const Config& config, CredentialStore* credentials)
    : host_(host), config_(config), credentials_(credentials), client_([&] {
          http::Settings s;
          const http::Settings& c = config.http;
          s.ca_file = c.ca_file;
          s.client_certificate = c.client_certificate;
          s.client_key = c.client_key;
          s.key_pin = c.key_pin.clone();
          s.proxy = c.proxy;
          s.proxy_username = c.proxy_username;
          s.proxy_password = c.proxy_password.clone();
          s.proxy_auth = c.proxy_auth;
          s.no_proxy = c.no_proxy;
          s.connect_timeout = c.connect_timeout;
          s.timeout = c.timeout;
          s.max_response_bytes = c.max_response_bytes;
          s.user_agent = c.user_agent;
          return s;
      }()) {}

void IntuneClient::note_error(const std::string& message) {
    std::lock_guard lock(mutex_);
    status_.last_error = message;
}

json::value IntuneClient::parse_answer(const http::Response& response, const std::string& what) const {
    std::error_code ec;
    json::value v = json::parse(response.body, ec);
    if (ec)
        throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": HTTP " + std::to_string(response.status) + " answer is not JSON (" +
                                                 std::to_string(response.body.size()) + " bytes)");
    return v;
}

IntuneClient::Token IntuneClient::fetch_token(const std::string& scope, const Credential* credential) {
    const std::string endpoint = config_.token_endpoint();
    const std::string what = "Entra ID sign-in for " + scope;
    std::vector<std::pair<std::string, std::string>> form = {
        {"client_id", config_.client_id}, {"scope", scope}, {"grant_type", "client_credentials"}};
    std::shared_ptr<const Credential> current;
    if (credential == nullptr && credentials_ != nullptr) {
        current = credentials_->current();
        credential = current.get();
    }
    if (credential != nullptr) {
        form.emplace_back("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        form.emplace_back("client_assertion", client_assertion(*credential, config_.client_id, endpoint));
    } else {
        form.emplace_back("client_secret", std::string(config_.client_secret.reveal()));
    }
    http::Request request;
    request.method = "POST";
    request.url = endpoint;
    request.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
                       {"Accept", "application/json"},
                       {"client-request-id", crypto::uuid4()}};
    request.body = http::form_encode(form);
    for (auto& [k, v] : form)
        sdk::wipe(v.data(), v.size());  // the secret or assertion
    http::Response response;
    try {
        response = client_.perform(request);
    } catch (const sdk::Error& e) {
        sdk::wipe(request.body.data(), request.body.size());
        const std::string message = what + ": " + e.what();
        note_error(message);
        {
            std::lock_guard lock(mutex_);
            status_.sign_in_error = message;
        }
        host_.log(CC_EV_TenantSignInFailed, CC_LEVEL_ERROR, message, {},
                  json::serialize(json::object{{"scope", scope}, {"client_id", config_.client_id}}));
        throw sdk::Error(e.code(), message);
    }
    sdk::wipe(request.body.data(), request.body.size());
    if (response.status != 200) {
        // A refused sign-in (wrong secret, expired certificate, missing consent) is retried like an
        // outage: what waits for Intune (notifications, results) is kept until the operator fixes it.
        sdk::Error e = http_error(what, response.status, response.body, response.retry_after());
        const cc_status code = e.retryable() ? e.code() : CC_ERR_UNAVAILABLE;
        const std::string message =
            std::string(e.what()) + (e.retryable() ? "" : " (sign-in refused; check tenant_id, client_id and the credential)");
        note_error(message);
        {
            std::lock_guard lock(mutex_);
            status_.sign_in_error = message;
        }
        host_.log(CC_EV_TenantSignInFailed, CC_LEVEL_ERROR, message, {},
                  json::serialize(json::object{{"scope", scope}, {"client_id", config_.client_id}, {"status", response.status}}));
        throw sdk::Error(code, message);
    }
    const json::value v = parse_answer(response, what);
    const json::object* o = v.if_object();
    const json::value* access = o ? o->if_contains("access_token") : nullptr;
    if (!access || !access->is_string() || access->get_string().empty() || access->get_string().size() > std::size_t{64} * 1024) {
        const std::string message = what + ": the answer has no string field 'access_token'";
        note_error(message);
        host_.log(CC_EV_TenantSignInFailed, CC_LEVEL_ERROR, message);
        throw sdk::Error(CC_ERR_UNAVAILABLE, message);
    }
    if (const auto* type = o->if_contains("token_type");
        type && (!type->is_string() || lower(std::string(type->get_string())) != "bearer"))
        throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": field 'token_type' is not \"Bearer\"");
    std::int64_t lifetime = 3599;
    if (const auto* e = o->if_contains("expires_in")) {
        if (e->is_int64())
            lifetime = e->get_int64();
        else if (e->is_string() && !e->get_string().empty() && e->get_string().size() < 10 &&
                 std::all_of(e->get_string().begin(), e->get_string().end(), [](char c) { return c >= '0' && c <= '9'; }))
            lifetime = std::stoll(std::string(e->get_string()));
        else
            throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": field 'expires_in' is not a number of seconds");
    }
    lifetime = std::clamp<std::int64_t>(lifetime, 1, 86400);
    // Refreshed 5 minutes before expiry, or halfway through a shorter lifetime.
    const std::int64_t margin = std::min<std::int64_t>(300, lifetime / 2);
    Token token{std::string(access->get_string()), Clock::now() + std::chrono::seconds(lifetime - margin)};
    {
        std::lock_guard lock(mutex_);
        status_.signed_in = std::chrono::system_clock::now();
        status_.sign_in_error.clear();
    }
    host_.log(CC_EV_TenantSignedIn, CC_LEVEL_INFO, "signed in to Entra ID for " + scope, {},
              json::serialize(json::object{{"scope", scope},
                                           {"client_id", config_.client_id},
                                           {"expires_in", lifetime},
                                           {"credential", credential ? "certificate" : "secret"}}));
    return token;
}

std::string IntuneClient::token(const std::string& scope) {
    {
        std::lock_guard lock(mutex_);
        if (auto it = tokens_.find(scope); it != tokens_.end() && Clock::now() < it->second.expires) return it->second.value;
    }
    Token t = fetch_token(scope, nullptr);
    std::lock_guard lock(mutex_);
    tokens_[scope] = t;
    return t.value;
}

void IntuneClient::drop_token(const std::string& scope) {
    std::lock_guard lock(mutex_);
    tokens_.erase(scope);
}

void IntuneClient::test_sign_in(const Credential& credential) {
    Token t = fetch_token(config_.graph_scope(), &credential);
    sdk::wipe(t.value.data(), t.value.size());
}

json::value IntuneClient::graph(const std::string& method, const std::string& path, const std::string& body) {
    const std::string scope = config_.graph_scope();
    const std::string what = "Graph " + method + " " + path.substr(0, path.find('?'));
    for (int attempt = 0;; ++attempt) {
        http::Request request;
        request.method = method;
        request.url = config_.graph_url + path;
        request.headers = {
            {"Authorization", "Bearer " + token(scope)}, {"Accept", "application/json"}, {"client-request-id", crypto::uuid4()}};
        if (!body.empty() || method == "POST" || method == "PATCH") {
            request.headers.push_back({"Content-Type", "application/json"});
            request.body = body;
        }
        http::Response response;
        try {
            response = client_.perform(request);
        } catch (const sdk::Error& e) {
            note_error(what + ": " + e.what());
            throw sdk::Error(e.code(), what + ": " + e.what());
        }
        if (response.status == 401 && attempt == 0) {
            drop_token(scope);
            continue;
        }
        if (response.status < 200 || response.status > 299) {
            sdk::Error e = http_error(what, response.status, response.body, response.retry_after());
            note_error(e.what());
            throw sdk::Error(e);
        }
        if (response.body.empty()) return nullptr;
        return parse_answer(response, what);
    }
}

bool IntuneClient::may_refresh_discovery() {
    std::lock_guard lock(mutex_);
    return Clock::now() - last_discovery_attempt_ >= kDiscoveryThrottle;
}

std::size_t IntuneClient::discover() {
    std::lock_guard one(discovery_mutex_);
    {
        std::lock_guard lock(mutex_);
        last_discovery_attempt_ = Clock::now();
    }
    const std::string path = std::string("/v1.0/servicePrincipals/appId=") + kIntuneAppId + "/endpoints";
    std::map<std::string, std::string> found;
    try {
        const json::value answer = graph("GET", path, "");
        const json::object* o = answer.if_object();
        const json::value* value = o ? o->if_contains("value") : nullptr;
        if (!value || !value->is_array())
            throw sdk::Error(CC_ERR_UNAVAILABLE, "Graph service discovery: the answer has no array 'value'");
        if (value->get_array().size() > 1000)
            throw sdk::Error(CC_ERR_UNAVAILABLE, "Graph service discovery: more than 1000 endpoints answered");
        for (const auto& e : value->get_array()) {
            const json::object* eo = e.if_object();
            if (!eo) continue;
            const auto* name = eo->if_contains("providerName");
            const auto* uri = eo->if_contains("uri");
            if (!name || !name->is_string() || !uri || !uri->is_string()) continue;
            std::string u(uri->get_string());
            if (u.rfind("https://", 0) != 0 || u.size() > 2048 || u.find_first_of(" \t\r\n") != std::string::npos) continue;
            while (!u.empty() && u.back() == '/')
                u.pop_back();
            found[lower(std::string(name->get_string()))] = u;
        }
        if (found.empty())
            throw sdk::Error(CC_ERR_UNAVAILABLE, "Graph service discovery: no endpoint with providerName and an https uri");
    } catch (const sdk::Error& e) {
        const std::string message =
            std::string(e.what()).rfind("Graph", 0) == 0 ? e.what() : std::string("Graph service discovery: ") + e.what();
        note_error(message);
        {
            std::lock_guard lock(mutex_);
            status_.discovery_error = message;
        }
        host_.log(CC_EV_TenantDiscoveryFailed, CC_LEVEL_WARNING, message, {},
                  json::serialize(json::object{{"graph_url", config_.graph_url}}));
        throw sdk::Error(e.code(), message);
    }
    json::array names;
    for (const auto& [n, u] : found)
        names.emplace_back(n);
    const std::size_t count = found.size();
    {
        std::lock_guard lock(mutex_);
        services_ = std::move(found);
        discovery_stale_ = false;
        status_.discovered = std::chrono::system_clock::now();
        status_.services = count;
        status_.discovery_error.clear();
    }
    host_.log(CC_EV_TenantDiscovered, CC_LEVEL_INFO, "discovered " + std::to_string(count) + " Intune service endpoints", {},
              json::serialize(json::object{{"services", names}}));
    return count;
}

std::string IntuneClient::service_uri(const std::string& name) {
    const std::string key = lower(name);
    bool need = false;
    std::optional<std::string> cached;
    {
        std::lock_guard lock(mutex_);
        if (auto it = services_.find(key); it != services_.end()) cached = it->second;
        need = services_.empty() || (discovery_stale_ && Clock::now() - last_discovery_attempt_ >= kDiscoveryThrottle);
    }
    if (cached && !need) return *cached;
    if (!cached && !need) need = may_refresh_discovery();  // a name missing: refresh, at most once a minute
    if (need) {
        try {
            discover();
        } catch (const sdk::Error&) {
            if (!cached) throw;  // a stale entry is better than none while Graph is away
        }
    }
    std::lock_guard lock(mutex_);
    if (auto it = services_.find(key); it != services_.end()) return it->second;
    throw sdk::Error(CC_ERR_UNAVAILABLE,
                     "Intune lists no endpoint for service " + name +
                         " (is the tenant licensed for Intune? discovery is refreshed at most once a minute)");
}

json::value IntuneClient::call(const std::string& service, const std::string& api_version, const std::string& path,
                               const json::object& body, const std::string& request_id) {
    const std::string uri = service_uri(service);
    const std::string url = uri + "/" + path;
    const std::string what = "Intune " + service + " " + path;
    const std::string client_request_id = crypto::uuid4();
    const std::string payload = json::serialize(body);
    auto event = [&](long status, const std::string& message) {
        host_.log(CC_EV_TenantCallFailed, CC_LEVEL_WARNING, message, request_id,
                  json::serialize(json::object{
                      {"service", service}, {"path", path}, {"status", status}, {"client-request-id", client_request_id}}));
    };
    for (int attempt = 0;; ++attempt) {
        std::string bearer;
        try {
            bearer = token(config_.intune_scope);
        } catch (const sdk::Error& e) {
            event(0, what + ": " + e.what());
            throw;
        }
        http::Request request;
        request.method = "POST";
        request.url = url;
        request.headers = {{"Authorization", "Bearer " + bearer}, {"content-type", "application/json"},
                           {"Accept", "application/json"},        {"client-request-id", client_request_id},
                           {"api-version", api_version},          {"UserAgent", config_.http.user_agent}};
        request.body = payload;
        http::Response response;
        try {
            response = client_.perform(request);
        } catch (const sdk::Error& e) {
            if (e.code() == CC_ERR_UNAVAILABLE) {
                // As Microsoft's clients do: a connection failure may mean the service moved.
                std::lock_guard lock(mutex_);
                discovery_stale_ = true;
            }
            const std::string message = what + ": " + e.what();
            note_error(message);
            event(0, message);
            throw sdk::Error(e.code(), message);
        }
        if (response.status == 401 && attempt == 0) {
            drop_token(config_.intune_scope);
            continue;
        }
        if (response.status >= 200 && response.status <= 299) {
            json::value v = parse_answer(response, what);
            if (!v.is_object()) throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": the answer is not a JSON object");
            return v;
        }
        if (response.status == 404) {
            std::lock_guard lock(mutex_);
            discovery_stale_ = true;
        }
        sdk::Error e = http_error(what, response.status, response.body, response.retry_after());
        note_error(e.what());
        event(response.status, e.what());
        throw sdk::Error(e);
    }
}

IntuneClient::Status IntuneClient::status() const {
    std::lock_guard lock(mutex_);
    return status_;
}

}  // namespace certconn::intune
