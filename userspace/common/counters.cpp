// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "common/counters.hpp"

#include <algorithm>
#include <map>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace locabus {

std::string_view to_string(CounterKind k) noexcept {
  switch (k) {
    case CounterKind::counter: return "counter";
    case CounterKind::gauge: return "gauge";
    case CounterKind::flag: return "flag";
  }
  return "counter";
}

namespace {

CounterKind kind_from(std::string_view s) {
  if (s == "counter") return CounterKind::counter;
  if (s == "gauge") return CounterKind::gauge;
  if (s == "flag") return CounterKind::flag;
  throw std::invalid_argument("counter schema: unknown kind '" + std::string(s) + "'");
}

std::vector<std::string> split_name(const std::string& name) {
  std::vector<std::string> out;
  if (name.empty()) return out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = name.find('.', start);
    out.push_back(name.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return out;
    start = dot + 1;
  }
}

/// The group's object in `root`, made if missing: name's parts, then label values.
nlohmann::json& place(nlohmann::json& root, const CounterGroup& g) {
  nlohmann::json* at = &root;
  for (const auto& part : split_name(g.name)) at = &(*at)[part];
  for (const auto& [label, value] : g.labels) at = &(*at)[value];
  if (at->is_null()) *at = nlohmann::json::object();
  return *at;
}

/// The group's object in `root`, or nullptr.
const nlohmann::json* find(const nlohmann::json& root, const std::vector<std::string>& path) {
  const nlohmann::json* at = &root;
  for (const auto& part : path) {
    if (!at->is_object()) return nullptr;
    auto it = at->find(part);
    if (it == at->end()) return nullptr;
    at = &*it;
  }
  return at;
}

std::uint64_t number(const nlohmann::json& v) {
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer())
    return static_cast<std::uint64_t>(std::max<std::int64_t>(0, v.get<std::int64_t>()));
  if (v.is_number_float()) return static_cast<std::uint64_t>(std::max(0.0, v.get<double>()));
  return 0;
}

void check_group_name(const std::string& name) {
  for (const auto& part : split_name(name))
    if (part.empty() || !valid_metric_name(part) || part.find(':') != std::string::npos)
      throw std::invalid_argument("counter group name '" + name +
                                  "' is not a path of [a-z_][a-z0-9_]* parts");
}

std::string escape_help(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string escape_label_value(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"')
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

std::string label_text(const CounterLabels& common, const CounterLabels& own,
                       const CounterLabels& extra = {}) {
  std::string out;
  for (const auto* set : {&common, &own, &extra}) {
    for (const auto& [k, v] : *set) {
      if (!valid_label_name(k))
        throw std::invalid_argument("'" + k + "' is not a valid Prometheus label name");
      out += out.empty() ? "{" : ",";
      out += k + "=\"" + escape_label_value(v) + "\"";
    }
  }
  if (!out.empty()) out += "}";
  return out;
}

std::string family_prefix(const std::string& group) {
  std::string out = "locabus_";
  for (const char c : group) out += c == '.' ? '_' : c;
  if (!group.empty()) out += '_';
  return out;
}

}  // namespace

CounterGroup& CounterGroup::add(const CounterField& field, std::uint64_t value) {
  samples.push_back({std::string(field.name), std::string(field.description), field.kind, value});
  return *this;
}

CounterGroup& CounterGroup::add(std::span<const CounterField> fields, std::span<const std::uint64_t> values) {
  if (fields.size() != values.size())
    throw std::invalid_argument("counter group " + name + ": " + std::to_string(fields.size()) +
                                " fields but " + std::to_string(values.size()) + " values");
  for (std::size_t i = 0; i < fields.size(); ++i) add(fields[i], values[i]);
  return *this;
}

CounterGroup json_group(std::string name, std::string description, nlohmann::json value) {
  CounterGroup g(std::move(name), std::move(description));
  g.json = std::make_shared<const nlohmann::json>(std::move(value));
  return g;
}

nlohmann::json values_json(const CounterGroup& g) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& s : g.samples) {
    if (s.kind == CounterKind::flag)
      j[s.name] = s.value != 0;
    else
      j[s.name] = s.value;
  }
  for (const auto& [k, v] : g.info) j[k] = v;
  return j;
}

nlohmann::json counters_json(const CounterGroups& groups) {
  nlohmann::json root = nlohmann::json::object();
  for (const auto& g : groups) {
    nlohmann::json& at = place(root, g);
    if (g.json) {
      if (g.json->is_object())
        at.update(*g.json);
      else
        at = *g.json;
    }
    at.update(values_json(g));
  }
  return root;
}

nlohmann::json counters_schema(const CounterGroups& groups) {
  nlohmann::json out = nlohmann::json::array();
  std::map<std::string, std::size_t> seen;
  for (const auto& g : groups) {
    if (seen.count(g.name)) continue;  // another snapshot (another peer) of a group described already
    seen[g.name] = out.size();
    nlohmann::json labels = nlohmann::json::array();
    for (const auto& [k, v] : g.labels) labels.push_back(k);
    nlohmann::json fields = nlohmann::json::array();
    for (const auto& s : g.samples)
      fields.push_back({{"name", s.name}, {"kind", to_string(s.kind)}, {"description", s.description}});
    nlohmann::json info = nlohmann::json::array();
    for (const auto& [k, v] : g.info) info.push_back(k);
    out.push_back({{"name", g.name},
                   {"description", g.description},
                   {"labels", labels},
                   {"fields", fields},
                   {"info", info},
                   {"json", g.json != nullptr},
                   {"exported", g.exported}});
  }
  return out;
}

namespace {

// One schema entry's snapshots found under `at` (one level per remaining label).
void collect(const nlohmann::json& entry, const nlohmann::json& at, std::size_t depth, CounterLabels& labels,
             CounterGroups& out) {
  const auto& label_names = entry.at("labels");
  if (depth < label_names.size()) {
    if (!at.is_object()) return;
    for (auto it = at.begin(); it != at.end(); ++it) {
      labels.emplace_back(label_names[depth].get<std::string>(), it.key());
      collect(entry, it.value(), depth + 1, labels, out);
      labels.pop_back();
    }
    return;
  }
  const auto name = entry.at("name").get<std::string>();
  const auto description = entry.at("description").get<std::string>();
  if (entry.value("json", false)) {
    out.push_back(json_group(name, description, at));
    out.back().labels = labels;
    return;
  }
  CounterGroup g(name, description, labels);
  g.exported = entry.value("exported", true);
  for (const auto& f : entry.at("fields")) {
    const auto fname = f.at("name").get<std::string>();
    auto it = at.find(fname);
    if (it == at.end()) continue;  // not in this snapshot
    g.samples.push_back({fname, f.at("description").get<std::string>(),
                         kind_from(f.at("kind").get<std::string>()), number(*it)});
  }
  for (const auto& k : entry.at("info")) {
    const auto key = k.get<std::string>();
    if (auto it = at.find(key); it != at.end() && it->is_string())
      g.info.emplace_back(key, it->get<std::string>());
  }
  out.push_back(std::move(g));
}

}  // namespace

CounterGroups counters_from_json(const nlohmann::json& values, const nlohmann::json& schema) {
  if (!schema.is_array()) throw std::invalid_argument("counter schema: not an array");
  CounterGroups out;
  try {
    for (const auto& entry : schema) {
      const nlohmann::json* at = find(values, split_name(entry.at("name").get<std::string>()));
      if (!at) continue;
      CounterLabels labels;
      collect(entry, *at, 0, labels, out);
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("counter schema: ") + e.what());
  }
  return out;
}

std::string prometheus_text(const CounterGroups& groups, const CounterLabels& common) {
  struct Family {
    std::string help;
    std::string_view type;
    std::vector<std::string> samples;  // "name{labels} value"
  };
  std::vector<std::string> order;  // families in order of first appearance
  std::map<std::string, Family> families;
  auto sample = [&](const std::string& metric, std::string_view help, std::string_view type,
                    std::string line) {
    if (!valid_metric_name(metric))
      throw std::invalid_argument("'" + metric + "' is not a valid metric name");
    auto [it, fresh] = families.try_emplace(metric);
    if (fresh) {
      order.push_back(metric);
      it->second.help = escape_help(help);
      it->second.type = type;
    } else if (it->second.type != type) {
      throw std::invalid_argument("metric " + metric + " defined as both " + std::string(it->second.type) +
                                  " and " + std::string(type));
    }
    it->second.samples.push_back(std::move(line));
  };
  for (const auto& g : groups) {
    if (!g.exported || g.json) continue;
    check_group_name(g.name);
    const std::string prefix = family_prefix(g.name);
    for (const auto& s : g.samples) {
      std::string metric = prefix + s.name;
      const bool counter = s.kind == CounterKind::counter;
      if (counter && !(metric.size() > 6 && metric.ends_with("_total"))) metric += "_total";
      sample(metric, s.description, counter ? "counter" : "gauge",
             metric + label_text(common, g.labels) + " " + std::to_string(s.value));
    }
    if (!g.info.empty()) {
      const std::string metric = prefix + "info";
      sample(metric, g.description, "gauge", metric + label_text(common, g.labels, g.info) + " 1");
    }
  }
  std::string out;
  for (const auto& metric : order) {
    const Family& f = families.at(metric);
    out += "# HELP " + metric + " " + f.help + "\n";
    out += "# TYPE " + metric + " " + std::string(f.type) + "\n";
    for (const auto& line : f.samples) out += line + "\n";
  }
  return out;
}

bool valid_metric_name(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool valid_label_name(std::string_view name) noexcept {
  if (name.empty() || name.starts_with("__")) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

}  // namespace locabus
