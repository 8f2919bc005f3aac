#include "status/FleetText.hpp"

#include <boost/json.hpp>

namespace certconn::host {

namespace json = boost::json;

namespace {

std::string str(const json::value* v) {
    if (!v) return "";
    return v->is_string() ? std::string(v->get_string()) : json::serialize(*v);
}
std::string str(const json::object& o, const char* key) {
    return str(o.if_contains(key));
}
std::string list(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    if (!v || !v->is_array() || v->as_array().empty()) return "-";
    std::string out;
    for (const auto& e : v->as_array())
        out += (out.empty() ? "" : ",") + str(&e);
    return out;
}
const json::array& array(const json::object& o, const char* key) {
    static const json::array empty;
    const auto* v = o.if_contains(key);
    return v && v->is_array() ? v->as_array() : empty;
}
const json::object& object(const json::object& o, const char* key) {
    static const json::object empty;
    const auto* v = o.if_contains(key);
    return v && v->is_object() ? v->as_object() : empty;
}

}  // namespace

void print_fleet(std::ostream& out, const json::object& fleet) {
    if (const auto* e = fleet.if_contains("error")) {
        out << "fleet: unavailable (" << str(e) << ")\n";
        return;
    }
    const auto& store = object(fleet, "store");
    out << "fleet store: " << str(store, "describe");
    if (const auto* r = store.if_contains("reachable"); r && r->is_bool() && !r->as_bool())
        out << " - NOT REACHABLE (" << str(store, "error") << ")";
    out << "\n  heartbeat every " << str(fleet, "heartbeat_seconds") << " s, lost after " << str(fleet, "lost_after_seconds")
        << " s; fleet version " << str(fleet, "majority_version") << "\n";

    const auto& instances = array(fleet, "instances");
    out << "instances (" << instances.size() << "):\n";
    for (const auto& v : instances) {
        if (!v.is_object()) continue;
        const auto& i = v.as_object();
        const bool skew = i.contains("version_skew") && i.at("version_skew").is_bool() && i.at("version_skew").as_bool();
        const bool self = i.contains("this") && i.at("this").is_bool() && i.at("this").as_bool();
        out << "  " << str(i, "instance_id") << (self ? " (this)" : "") << "  " << str(i, "state") << ", heartbeat "
            << str(i, "heartbeat_age_seconds") << " s ago, " << str(i, "host") << " pid " << str(i, "pid") << ", version "
            << str(i, "version") << (skew ? " (VERSION SKEW)" : "") << ", " << str(i, "health") << "\n"
            << "      features " << list(i, "features") << "; tenants " << list(i, "tenants") << "; CAs " << list(i, "cas")
            << "\n      keys";
        const auto& keys = object(i, "key_fingerprints");
        if (keys.empty()) out << " -";
        for (const auto& [name, fp] : keys)
            out << " " << std::string(name) << "=" << str(&fp).substr(0, 16);
        out << "\n";
    }

    out << "leaders:";
    const auto& leaders = array(fleet, "leaders");
    if (leaders.empty()) out << " none";
    out << "\n";
    for (const auto& v : leaders) {
        if (!v.is_object()) continue;
        const auto& l = v.as_object();
        const bool live = l.contains("live") && l.at("live").is_bool() && l.at("live").as_bool();
        out << "  " << str(l, "schema") << "." << str(l, "name") << ": " << str(l, "holder") << " (" << str(l, "holder_state")
            << "), epoch " << str(l, "epoch") << ", "
            << (live ? "expires in " + str(l, "expires_in_seconds") + " s" : std::string("expired")) << "\n";
    }
    if (fleet.contains("leaders_note")) out << "  (" << str(fleet, "leaders_note") << ")\n";

    out << "queues:";
    const auto& queues = object(fleet, "queues");
    if (queues.empty()) out << " none reported";
    out << "\n";
    for (const auto& [feature, v] : queues) {
        if (!v.is_object()) continue;
        const auto& q = v.as_object();
        out << "  " << std::string(feature) << ": " << str(q, "queued") << " queued, " << str(q, "running") << " running, oldest "
            << str(q, "oldest_queued_age_seconds") << " s\n";
    }
    for (const auto& [tenant, v] : object(fleet, "tenant_stats"))
        if (v.is_object() && v.as_object().contains("error"))
            out << "  tenant '" << std::string(tenant) << "': no queue statistics (" << str(v.as_object(), "error") << ")\n";

    out << "outbox: " << str(fleet, "outbox_pending") << " pending\n";
    for (const auto& [tenant, v] : object(fleet, "outbox")) {
        if (!v.is_object()) continue;
        const auto& b = v.as_object();
        out << "  " << std::string(tenant) << ": " << str(b, "pending") << " pending, " << str(b, "refused")
            << " refused, oldest " << str(b, "oldest_age_seconds") << " s\n";
    }

    const auto& problems = array(fleet, "problems");
    out << "problems:";
    if (problems.empty()) out << " none";
    out << "\n";
    for (const auto& p : problems)
        out << "  ! " << str(&p) << "\n";
}

}  // namespace certconn::host
