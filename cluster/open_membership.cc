// open_membership (cluster/membership.h): a driver from its spec.
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "cluster/local_membership.h"
#include "cluster/membership.h"
#include "cluster/zookeeper_membership.h"

namespace kelpie {

std::string MemberStatusText::text() const {
  if (fields_.empty()) return base_;
  auto doc = nlohmann::json::parse(base_, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) doc = nlohmann::json::object();
  for (const auto& [key, value] : fields_) {
    auto parsed = nlohmann::json::parse(value, nullptr, false);
    if (!parsed.is_discarded()) doc[key] = std::move(parsed);
  }
  return doc.dump();
}

Result<std::unique_ptr<MembershipDriver>> open_membership(const std::string& spec) {
  static constexpr std::string_view kLocal = "local:";
  if (spec.rfind("zookeeper:", 0) == 0) {
    Result<ZookeeperMembershipOptions> options = parse_zookeeper_spec(spec);
    if (!options) return options.status();
    auto driver = std::make_unique<ZookeeperMembership>(std::move(*options));
    if (Status connected = driver->connect(); !connected) {
      return Status::error(connected.code(), "membership '" + spec + "': " + connected.message());
    }
    return std::unique_ptr<MembershipDriver>(std::move(driver));
  }
  if (spec.rfind(kLocal, 0) != 0) {
    return Status::error(EINVAL, "membership '" + spec +
                                     "': expected local:/path or zookeeper:HOST:PORT/path");
  }
  std::string path = spec.substr(kLocal.size());
  if (path.empty()) return Status::error(EINVAL, "membership 'local:' needs a directory path");
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) return Status::error(error.value(), "membership: mkdir " + path);
  LocalMembershipOptions options;
  options.state_dir = path;
  return std::unique_ptr<MembershipDriver>(std::make_unique<LocalMembership>(std::move(options)));
}

}  // namespace kelpie
