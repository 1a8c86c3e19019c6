// Internal to the zookeeper membership driver (cluster/zookeeper_membership*.cc,
// cluster/zookeeper_epochs.cc): helpers the driver's files share. Not for other code.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace kelpie::zookeeper_internal {

// `text` parsed as a JSON object. EBADMSG "<what> is not a JSON object" otherwise
// (not JSON, or JSON that is not an object).
Result<nlohmann::json> parse_json(const std::string& text, const std::string& what);

}  // namespace kelpie::zookeeper_internal
