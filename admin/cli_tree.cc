// `vdi tree`: VDIs, snapshots and clones from vdi.list, drawn as trees.
//
// A writable VDI NAME and its snapshots NAME@TAG form a group: the VDI with its
// snapshots below it, oldest (lowest id) first. A group whose members came from a
// snapshot of another group (parent_id) is a clone and hangs below that snapshot;
// every other group is a root. Ids and parent ids come from the daemon as they are,
// so the drawing guards against a parent that is gone or a cycle: such a group is
// drawn as a root.
#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "admin/cli.h"
#include "common/admin_wire.h"

namespace kelpie::cli {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;  // keeps "children" last, after the node's own fields

struct TreeNode {
  const VdiSummary* vdi;
  std::vector<TreeNode> children;
};

struct Group {
  const VdiSummary* head = nullptr;        // the writable VDI, if listed
  std::vector<const VdiSummary*> members;  // the head and its snapshots, by id
};

class Forest {
 public:
  explicit Forest(const std::vector<VdiSummary>& vdis);
  std::vector<TreeNode> roots();

 private:
  std::vector<TreeNode> build_group(const std::string& name);
  TreeNode build_snapshot(const VdiSummary* snapshot);

  std::map<std::string, Group> groups_;
  std::map<uint32_t, const VdiSummary*> snapshots_by_id_;
  std::map<const VdiSummary*, std::vector<std::string>> clones_;  // snapshot -> groups
  std::vector<std::string> root_groups_;
  std::set<std::string> visited_;
};

Forest::Forest(const std::vector<VdiSummary>& vdis) {
  for (const VdiSummary& vdi : vdis) {
    Group& group = groups_[base_name(vdi)];
    group.members.push_back(&vdi);
    if (vdi.tag.empty()) group.head = &vdi;
    if (!vdi.tag.empty()) snapshots_by_id_.emplace(vdi.id, &vdi);
  }
  for (auto& [name, group] : groups_) {
    std::ranges::sort(group.members, {}, [](const VdiSummary* vdi) { return vdi->id; });
    // The first member that came from another group's snapshot places the group.
    const VdiSummary* origin = nullptr;
    for (const VdiSummary* member : group.members) {
      auto parent = snapshots_by_id_.find(member->parent_id);
      if (member->parent_id != 0 && parent != snapshots_by_id_.end() &&
          base_name(*parent->second) != name) {
        origin = parent->second;
        break;
      }
    }
    if (origin != nullptr) {
      clones_[origin].push_back(name);
    } else {
      root_groups_.push_back(name);
    }
  }
}

std::vector<TreeNode> Forest::roots() {
  std::vector<TreeNode> trees;
  auto add = [&](const std::string& name) {
    for (TreeNode& node : build_group(name)) trees.push_back(std::move(node));
  };
  for (const std::string& name : root_groups_) add(name);
  // Groups only reachable through a cycle of parent ids.
  for (const auto& [name, group] : groups_) add(name);
  return trees;
}

std::vector<TreeNode> Forest::build_group(const std::string& name) {
  if (!visited_.insert(name).second) return {};
  const Group& group = groups_.at(name);
  std::vector<TreeNode> snapshots;
  for (const VdiSummary* member : group.members) {
    if (member != group.head) snapshots.push_back(build_snapshot(member));
  }
  if (group.head == nullptr) return snapshots;  // snapshots whose VDI is not listed
  return {TreeNode{group.head, std::move(snapshots)}};
}

TreeNode Forest::build_snapshot(const VdiSummary* snapshot) {
  TreeNode node{snapshot, {}};
  for (const std::string& clone : clones_[snapshot]) {
    for (TreeNode& child : build_group(clone)) node.children.push_back(std::move(child));
  }
  return node;
}

bool contains(const TreeNode& node, const auto& predicate) {
  if (predicate(*node.vdi)) return true;
  return std::ranges::any_of(node.children,
                             [&](const TreeNode& child) { return contains(child, predicate); });
}

ordered_json tree_json(const TreeNode& node) {
  ordered_json children = ordered_json::array();
  for (const TreeNode& child : node.children) children.push_back(tree_json(child));
  return {{"name", display_name(*node.vdi)},
          {"id", node.vdi->id},
          {"read_only", node.vdi->read_only},
          {"size_bytes", node.vdi->size_bytes},
          {"children", std::move(children)}};
}

std::string describe(const VdiSummary& vdi) {
  std::string text = display_name(vdi) + " (";
  if (vdi.read_only) text += "snapshot, ";
  text += "id " + std::to_string(vdi.id) + ", " + human_bytes(vdi.size_bytes) + ", used " +
          human_bytes(vdi.own_bytes);
  if (vdi.attached_connections > 0) {
    text += ", " + std::to_string(vdi.attached_connections) + " attached";
  }
  return text + ")";
}

// `prefix` is what the ancestors draw in front of this node's line.
void print_tree(const TreeNode& node, const std::string& prefix, bool is_root, bool is_last) {
  std::string branch = is_root ? "" : (is_last ? "└── " : "├── ");
  std::printf("%s%s%s\n", prefix.c_str(), branch.c_str(), describe(*node.vdi).c_str());
  std::string child_prefix = is_root ? prefix : prefix + (is_last ? "    " : "│   ");
  for (size_t i = 0; i < node.children.size(); ++i) {
    print_tree(node.children[i], child_prefix, false, i + 1 == node.children.size());
  }
}

}  // namespace

Status run_vdi_tree(const CliInvocation& cli, Args args) {
  Result<std::vector<VdiSummary>> vdis = list_vdis(cli);
  if (!vdis) return vdis.status();
  sort_vdis(*vdis);
  std::vector<TreeNode> trees = Forest(*vdis).roots();
  if (!args.empty()) {
    const std::string& name = args[0];
    auto named = std::ranges::find_if(
        *vdis, [&](const VdiSummary& vdi) { return display_name(vdi) == name; });
    if (named == vdis->end()) return Status::error(ENOENT, "VDI '" + name + "' not found");
    // The named VDI's tree, and the trees of its family that lost their link to it
    // (a clone whose snapshot was deleted).
    uint32_t family = named->family_id;
    std::erase_if(trees, [&](const TreeNode& tree) {
      return !contains(tree, [&](const VdiSummary& vdi) {
        return &vdi == &*named || (family != 0 && vdi.family_id == family);
      });
    });
  }
  if (cli.json) {
    ordered_json list = ordered_json::array();
    for (const TreeNode& tree : trees) list.push_back(tree_json(tree));
    std::printf("%s\n", list.dump(2, ' ', false, ordered_json::error_handler_t::replace).c_str());
  } else {
    for (const TreeNode& tree : trees) print_tree(tree, "", true, true);
  }
  return flush_stdout();
}

}  // namespace kelpie::cli
