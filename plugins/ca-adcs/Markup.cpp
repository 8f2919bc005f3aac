#include "Markup.hpp"

#include <cctype>

namespace certconn::ca_adcs {

namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

/// The decimal number at `pos` (at most 10 digits), or empty.
std::string digits_at(std::string_view s, std::size_t pos) {
    std::string out;
    while (pos < s.size() && is_digit(s[pos]) && out.size() < 10)
        out += s[pos++];
    return out;
}

std::string trim(std::string_view s) {
    std::size_t b = 0, e = s.size();
    while (b < e && std::isspace(static_cast<unsigned char>(s[b])))
        ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1])))
        --e;
    return std::string(s.substr(b, e - b));
}

/// Case-insensitive find.
std::size_t ifind(std::string_view hay, std::string_view needle, std::size_t from = 0) {
    if (needle.empty() || hay.size() < needle.size()) return std::string_view::npos;
    for (std::size_t i = from; i + needle.size() <= hay.size(); ++i) {
        std::size_t k = 0;
        while (k < needle.size() &&
               std::tolower(static_cast<unsigned char>(hay[i + k])) == std::tolower(static_cast<unsigned char>(needle[k])))
            ++k;
        if (k == needle.size()) return i;
    }
    return std::string_view::npos;
}

}  // namespace

std::string html_text(std::string_view raw, std::size_t max) {
    std::string out;
    bool in_tag = false, space = false;
    for (std::size_t i = 0; i < raw.size() && out.size() < max; ++i) {
        const char c = raw[i];
        if (in_tag) {
            if (c == '>') in_tag = false;
            continue;
        }
        if (c == '<') {
            in_tag = true;
            space = !out.empty();
            continue;
        }
        if (std::isspace(static_cast<unsigned char>(c))) {
            space = !out.empty();
            continue;
        }
        if (space) out += ' ';
        space = false;
        if (c == '&') {
            const auto semi = raw.find(';', i);
            if (semi != std::string_view::npos && semi - i <= 8) {
                const std::string_view ent = raw.substr(i, semi - i + 1);
                if (ent == "&amp;")
                    out += '&';
                else if (ent == "&lt;")
                    out += '<';
                else if (ent == "&gt;")
                    out += '>';
                else if (ent == "&quot;")
                    out += '"';
                else if (ent == "&#39;" || ent == "&apos;")
                    out += '\'';
                else if (ent == "&nbsp;")
                    out += ' ';
                else
                    out += ent;
                i = semi;
                continue;
            }
        }
        out += c;
    }
    return out;
}

Disposition read_certfnsh(std::string_view page) {
    Disposition d;
    // Issued: the page links (and scripts) certnew.cer?ReqID=<n>& (certsrv's own regex).
    if (auto p = page.find("certnew.cer?ReqID="); p != std::string_view::npos) {
        std::string id = digits_at(page, p + 18);
        const std::size_t after = p + 18 + id.size();
        if (!id.empty() && after < page.size() && page[after] == '&') {
            d.kind = Disposition::issued;
            d.request_id = std::move(id);
            return d;
        }
    }
    if (auto p = page.find("Your Request Id is "); p != std::string_view::npos) {
        std::string id = digits_at(page, p + 19);
        if (!id.empty()) {
            d.kind = Disposition::pending;
            d.request_id = std::move(id);
            return d;
        }
    }
    if (auto p = page.find("The disposition message is \""); p != std::string_view::npos) {
        const std::size_t from = p + 28;
        const auto end = page.find('"', from);
        if (end != std::string_view::npos && end - from <= 2048) {
            d.kind = Disposition::denied;
            d.message = html_text(page.substr(from, end - from));
            return d;
        }
    }
    if (auto m = error_page_disposition(page)) {
        d.kind = Disposition::denied;
        d.message = *m;
    }
    return d;
}

std::optional<std::string> error_page_disposition(std::string_view page) {
    const auto p = ifind(page, "Disposition message:");
    if (p == std::string_view::npos) return std::nullopt;
    // The value sits in the next <DD> ... up to the next <DT> or </DD>.
    const auto dd = ifind(page, "<DD>", p);
    if (dd == std::string_view::npos || dd - p > 256) return std::nullopt;
    auto end = ifind(page, "</DD>", dd + 4);
    const auto dt = ifind(page, "<DT", dd + 4);
    if (dt != std::string_view::npos && (end == std::string_view::npos || dt < end)) end = dt;
    if (end == std::string_view::npos || end - dd > 4096) return std::nullopt;
    std::string text = html_text(page.substr(dd + 4, end - dd - 4));
    if (text.empty()) return std::nullopt;
    return text;
}

std::optional<int> read_renewals(std::string_view page) {
    const auto p = page.find("nRenewals=");
    if (p == std::string_view::npos) return std::nullopt;
    const std::string n = digits_at(page, p + 10);
    if (n.empty() || n.size() > 4) return std::nullopt;
    return std::stoi(n);
}

std::vector<Element> elements(std::string_view xml, std::string_view local, std::size_t max) {
    std::vector<Element> out;
    std::size_t pos = 0;
    while (out.size() < max) {
        const auto lt = xml.find('<', pos);
        if (lt == std::string_view::npos) break;
        pos = lt + 1;
        if (lt + 1 >= xml.size() || xml[lt + 1] == '/' || xml[lt + 1] == '?' || xml[lt + 1] == '!') continue;
        // the qualified name: [prefix:]local
        std::size_t n = lt + 1;
        while (n < xml.size() && !std::isspace(static_cast<unsigned char>(xml[n])) && xml[n] != '>' && xml[n] != '/')
            ++n;
        const std::string_view qname = xml.substr(lt + 1, n - lt - 1);
        const auto colon = qname.find(':');
        const std::string_view name = colon == std::string_view::npos ? qname : qname.substr(colon + 1);
        if (name != local) continue;
        const auto gt = xml.find('>', n);
        if (gt == std::string_view::npos) break;
        Element e;
        const bool empty = gt > n && xml[gt - 1] == '/';
        e.attributes = std::string(xml.substr(n, (empty ? gt - 1 : gt) - n));
        if (empty) {
            out.push_back(std::move(e));
            pos = gt + 1;
            continue;
        }
        const std::string close = "</" + std::string(qname) + ">";
        const auto end = xml.find(close, gt + 1);
        if (end == std::string_view::npos) break;  // unterminated: not an element we can read
        e.content = std::string(xml.substr(gt + 1, end - gt - 1));
        out.push_back(std::move(e));
        pos = end + close.size();
    }
    return out;
}

std::optional<Element> element(std::string_view xml, std::string_view local) {
    auto all = elements(xml, local, 1);
    if (all.empty()) return std::nullopt;
    return std::move(all.front());
}

std::optional<std::string> attribute(std::string_view attributes, std::string_view name) {
    std::size_t pos = 0;
    while (true) {
        const auto p = attributes.find(name, pos);
        if (p == std::string_view::npos) return std::nullopt;
        pos = p + name.size();
        const bool starts = p == 0 || std::isspace(static_cast<unsigned char>(attributes[p - 1])) || attributes[p - 1] == ':';
        std::size_t q = pos;
        while (q < attributes.size() && std::isspace(static_cast<unsigned char>(attributes[q])))
            ++q;
        if (!starts || q >= attributes.size() || attributes[q] != '=') continue;
        ++q;
        while (q < attributes.size() && std::isspace(static_cast<unsigned char>(attributes[q])))
            ++q;
        if (q >= attributes.size() || (attributes[q] != '"' && attributes[q] != '\'')) return std::nullopt;
        const char quote = attributes[q];
        const auto end = attributes.find(quote, q + 1);
        if (end == std::string_view::npos) return std::nullopt;
        return xml_text(attributes.substr(q + 1, end - q - 1));
    }
}

std::string xml_text(std::string_view raw) {
    std::string out;
    out.reserve(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] != '&') {
            out += raw[i];
            continue;
        }
        const auto semi = raw.find(';', i);
        if (semi == std::string_view::npos || semi - i > 10) {
            out += raw[i];
            continue;
        }
        const std::string_view ent = raw.substr(i + 1, semi - i - 1);
        if (ent == "amp")
            out += '&';
        else if (ent == "lt")
            out += '<';
        else if (ent == "gt")
            out += '>';
        else if (ent == "quot")
            out += '"';
        else if (ent == "apos")
            out += '\'';
        else if (!ent.empty() && ent[0] == '#') {
            unsigned long v = 0;
            try {
                v = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X') ? std::stoul(std::string(ent.substr(2)), nullptr, 16)
                                                                       : std::stoul(std::string(ent.substr(1)));
            } catch (const std::exception&) {
                v = '?';
            }
            if (v < 0x80)
                out += static_cast<char>(v);
            else
                out += '?';  // only ASCII matters in what we read (numbers, base64, messages)
        } else {
            out += raw.substr(i, semi - i + 1);
        }
        i = semi;
    }
    return trim(out);
}

std::string xml_escape(std::string_view text) {
    std::string out;
    for (char c : text) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&apos;"; break;
            default: out += c;
        }
    }
    return out;
}

}  // namespace certconn::ca_adcs
