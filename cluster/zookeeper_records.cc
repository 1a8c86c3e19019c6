// The zookeeper driver's record coding (cluster/zookeeper_records.h). A node line is
// parsed by hand (std::from_chars, no JSON tree): every member of a 1,000-node
// cluster parses a 1,000-line record when it first learns the cluster.
#include "cluster/zookeeper_records.h"

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string_view>

#include "cluster/membership_codec.h"
#include "common/admin_wire.h"
#include "common/crc32c.h"

namespace kelpie::zookeeper_records {
namespace {

using nlohmann::json;

constexpr int kFormat = 2;
constexpr char kHex[] = "0123456789abcdef";

bool needs_escape(unsigned char c) { return c <= ' ' || c >= 0x7f || c == '%'; }

void put_text(std::string& out, const std::string& text) {
  if (text.empty()) {
    out += '-';
    return;
  }
  if (text == "-") {
    out += "%2d";
    return;
  }
  for (unsigned char c : text) {
    if (needs_escape(c)) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
}

void put_uuid(std::string& out, const Uuid& id) {
  for (size_t i = 0; i < id.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[id[i] >> 4];
    out += kHex[id[i] & 15];
  }
}

template <typename Number>
void put_number(std::string& out, Number value, int base = 10) {
  char buffer[32];
  auto [end, error] = std::to_chars(buffer, buffer + sizeof(buffer), value, base);
  out.append(buffer, end);
}

void put_node(std::string& out, const MemberInfo& node, int64_t session) {
  put_uuid(out, node.id);
  out += ' ';
  put_number(out, static_cast<uint64_t>(session), 16);
  for (const std::string* text : {&node.peer_address, &node.admin_address, &node.nbd_address,
                                  &node.zone}) {
    out += ' ';
    put_text(out, *text);
  }
  out += ' ';
  put_number(out, node.vnodes);
  out += node.gateway ? " 1 " : " 0 ";
  put_number(out, node.capacity_bytes);
  out += ' ';
  put_number(out, node.pid);
  out += '\n';
}

int lower_hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

int hex_value(char c) {
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return lower_hex_value(c);
}

bool get_text(std::string_view field, std::string& out) {
  out.clear();
  if (field == "-") return true;
  if (field.find('%') == std::string_view::npos) {
    out.assign(field);
    return true;
  }
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] != '%') {
      out += field[i];
      continue;
    }
    if (i + 2 >= field.size()) return false;
    int high = hex_value(field[i + 1]), low = hex_value(field[i + 2]);
    if (high < 0 || low < 0) return false;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return true;
}

// The canonical 8-4-4-4-12 lower-case form only (as parse_uuid, without a copy).
std::optional<Uuid> get_uuid(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  Uuid uuid{};
  size_t byte = 0;
  for (size_t i = 0; i < text.size(); i += 2) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
    }
    int high = lower_hex_value(text[i]), low = lower_hex_value(text[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    uuid[byte++] = static_cast<uint8_t>(high * 16 + low);
  }
  return uuid;
}

template <typename Number>
bool get_number(std::string_view field, Number& out, int base = 10) {
  auto [end, error] = std::from_chars(field.data(), field.data() + field.size(), out, base);
  return error == std::errc() && end == field.data() + field.size() && !field.empty();
}

// One node line (without its "+ "/"- " mark or '\n').
bool get_node(std::string_view line, MemberInfo& node, int64_t& session) {
  std::string_view fields[10];
  size_t count = 0;
  while (count < 10) {
    size_t space = line.find(' ');
    fields[count++] = line.substr(0, space);
    if (space == std::string_view::npos) break;
    line.remove_prefix(space + 1);
  }
  if (count != 10 || fields[9].size() != line.size()) return false;
  std::optional<Uuid> id = get_uuid(fields[0]);
  uint64_t session_bits = 0;
  uint32_t gateway = 0;
  if (!id || !get_number(fields[1], session_bits, 16) || !get_text(fields[2], node.peer_address) ||
      !get_text(fields[3], node.admin_address) || !get_text(fields[4], node.nbd_address) ||
      !get_text(fields[5], node.zone) || !get_number(fields[6], node.vnodes) ||
      !get_number(fields[7], gateway) || gateway > 1 ||
      !get_number(fields[8], node.capacity_bytes) || !get_number(fields[9], node.pid)) {
    return false;
  }
  node.id = *id;
  node.gateway = gateway == 1;
  session = static_cast<int64_t>(session_bits);
  return true;
}

json header_json(const EpochRecord& record) {
  json header = record_to_json(record);
  header.erase("nodes");
  header["format"] = kFormat;
  return header;
}

Result<EpochRecord> header_from_json(const json& object, const std::string& what) {
  json with_nodes = object;
  with_nodes["nodes"] = json::array();
  Result<EpochRecord> header = record_from_json(with_nodes);
  if (!header) return Status::error(EBADMSG, what + ": " + header.status().message());
  return header;
}

// The header line, parsed; `rest` is what follows it.
Result<json> split_header(const std::string& bytes, const std::string& what,
                          std::string_view& rest) {
  size_t end = bytes.find('\n');
  json header = json::parse(bytes.begin(),
                            end == std::string::npos ? bytes.end() : bytes.begin() + end, nullptr,
                            false);
  if (header.is_discarded() || !header.is_object()) {
    return Status::error(EBADMSG, what + " is not a JSON object");
  }
  rest = end == std::string::npos ? std::string_view() : std::string_view(bytes).substr(end + 1);
  return header;
}

Status bad_line(const std::string& what, size_t number) {
  return Status::error(EBADMSG, what + ": node line " + std::to_string(number) + " is malformed");
}

// Format 1.
int64_t parse_session(const std::string& text) {
  return static_cast<int64_t>(std::strtoull(text.c_str(), nullptr, 16));
}

std::map<Uuid, int64_t> incarnations_from_json(const json& object) {
  std::map<Uuid, int64_t> out;
  auto it = object.find("incarnations");
  if (it == object.end() || !it->is_object()) return out;
  for (auto& [id, session] : it->items()) {
    std::optional<Uuid> uuid = parse_uuid(id);
    if (uuid && session.is_string()) out[*uuid] = parse_session(session.get<std::string>());
  }
  return out;
}

Result<std::vector<MemberInfo>> members_field(const json& object, const char* key,
                                              const std::string& what) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_array()) {
    return Status::error(EBADMSG, what + ": field '" + key + "' must be an array");
  }
  std::vector<MemberInfo> out;
  for (const json& item : *it) {
    Result<MemberInfo> member = member_info_from_json(item);
    if (!member) return Status::error(EBADMSG, what + ": " + member.status().message());
    out.push_back(*member);
  }
  return out;
}

bool is_format2(const json& header) {
  auto it = header.find("format");
  return it != header.end() && it->is_number_integer() && it->get<int>() == kFormat;
}

}  // namespace

std::string encode_full(const EpochRecord& record, const std::map<Uuid, int64_t>& incarnations) {
  EpochRecord header = record;
  header.nodes.clear();
  std::string out = dump_json(header_json(header));
  out += '\n';
  out.reserve(out.size() + record.nodes.size() * 128);
  for (const MemberInfo& node : record.nodes) {
    auto it = incarnations.find(node.id);
    put_node(out, node, it == incarnations.end() ? 0 : it->second);
  }
  return out;
}

Result<Full> decode_full(const std::string& bytes, const std::string& what) {
  std::string_view rest;
  Result<json> header = split_header(bytes, what, rest);
  if (!header) return header.status();
  Full full;
  if (!is_format2(*header)) {
    if (!rest.empty()) return Status::error(EBADMSG, what + ": unknown format");
    Result<EpochRecord> record = record_from_json(*header);
    if (!record) return Status::error(EBADMSG, what + ": " + record.status().message());
    full.record = std::move(*record);
    sort_by_id(full.record.nodes);
    full.incarnations = incarnations_from_json(*header);
    return full;
  }
  Result<EpochRecord> record = header_from_json(*header, what);
  if (!record) return record.status();
  full.record = std::move(*record);
  full.record.nodes.reserve(static_cast<size_t>(std::count(rest.begin(), rest.end(), '\n')));
  for (size_t number = 1; !rest.empty(); ++number) {
    size_t end = rest.find('\n');
    if (end == std::string_view::npos) return bad_line(what, number);
    MemberInfo node;
    int64_t session = 0;
    if (!get_node(rest.substr(0, end), node, session)) return bad_line(what, number);
    rest.remove_prefix(end + 1);
    if (session != 0) full.incarnations.emplace_hint(full.incarnations.end(), node.id, session);
    full.record.nodes.push_back(std::move(node));
  }
  auto less = [](const MemberInfo& a, const MemberInfo& b) { return a.id < b.id; };
  if (!std::is_sorted(full.record.nodes.begin(), full.record.nodes.end(), less)) {
    sort_by_id(full.record.nodes);
  }
  return full;
}

std::string encode_change(const Change& change) {
  json header = header_json(change.header);
  header["nodes_crc"] = change.nodes_crc;
  std::string out = dump_json(header);
  out += '\n';
  for (const MemberInfo& node : change.added) {
    auto it = change.incarnations.find(node.id);
    out += "+ ";
    put_node(out, node, it == change.incarnations.end() ? 0 : it->second);
  }
  for (const MemberInfo& node : change.removed) {
    out += "- ";
    put_node(out, node, 0);
  }
  return out;
}

Result<Change> decode_change(const std::string& bytes, const std::string& what) {
  std::string_view rest;
  Result<json> header = split_header(bytes, what, rest);
  if (!header) return header.status();
  Change change;
  Result<EpochRecord> record = header_from_json(*header, what);
  if (!record) return record.status();
  change.header = std::move(*record);
  if (auto crc = header->find("nodes_crc"); crc != header->end()) {
    // json::value() would throw on a field of another type: refuse it instead.
    if (!crc->is_number_unsigned() || crc->get<uint64_t>() > UINT32_MAX) {
      return Status::error(EBADMSG, what + ": field 'nodes_crc' must be a 32-bit unsigned number");
    }
    change.nodes_crc = crc->get<uint32_t>();
  }
  if (!is_format2(*header)) {
    if (!rest.empty()) return Status::error(EBADMSG, what + ": unknown format");
    Result<std::vector<MemberInfo>> added = members_field(*header, "added", what);
    if (!added) return added.status();
    Result<std::vector<MemberInfo>> removed = members_field(*header, "removed", what);
    if (!removed) return removed.status();
    change.added = std::move(*added);
    change.removed = std::move(*removed);
    change.incarnations = incarnations_from_json(*header);
    return change;
  }
  for (size_t number = 1; !rest.empty(); ++number) {
    size_t end = rest.find('\n');
    if (end == std::string_view::npos || end < 2 || rest[1] != ' ' ||
        (rest[0] != '+' && rest[0] != '-')) {
      return bad_line(what, number);
    }
    MemberInfo node;
    int64_t session = 0;
    if (!get_node(rest.substr(2, end - 2), node, session)) return bad_line(what, number);
    if (rest[0] == '+') {
      change.incarnations[node.id] = session;
      change.added.push_back(std::move(node));
    } else {
      change.removed.push_back(std::move(node));
    }
    rest.remove_prefix(end + 1);
  }
  return change;
}

uint32_t nodes_crc(const std::vector<MemberInfo>& nodes) {
  // The ids' text sorts as the ids do (fixed-width lower-case hex), so the sorted
  // nodes give the sorted texts; one crc over their concatenation.
  uint32_t crc = 0;
  std::string text;
  for (const MemberInfo& node : nodes) {
    text.clear();
    put_uuid(text, node.id);
    crc = crc32c(text.data(), text.size(), crc);
  }
  return crc;
}

}  // namespace kelpie::zookeeper_records
