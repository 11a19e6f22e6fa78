// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The counters registry (common/counters.hpp): structs generated from one
// X-macro list, their sums, JSON, schema, the round trip locabusctl relies
// on, and the Prometheus text exposition parsed back line by line.
#include "common/counters.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <deque>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.hpp"
#include "fastpath/counters.hpp"
#include "frame_builder.hpp"

namespace locabus {
namespace {

using nlohmann::json;

#define TEST_COUNTERS(X)          \
  X(frames, "frames seen")        \
  X(drops, "frames dropped")      \
  X(bytes_total, "bytes counted") \
  X(retries, "second attempts")

struct TestCounters {
  LOCABUS_COUNTER_FIELDS(TestCounters, TEST_COUNTERS, CounterKind::counter)
};

#define TEST_GAUGES(X)                  \
  X(std::uint16_t, next, "a sequence")  \
  X(std::size_t, held, "messages held") \
  X(bool, up, "the link is up")

struct TestGauges {
  LOCABUS_TYPED_FIELDS(TestGauges, TEST_GAUGES, CounterKind::gauge)
};

TEST(CounterRegistry, GeneratedStructHasEveryFieldInOrder) {
  const std::vector<std::string> want = {"frames", "drops", "bytes_total", "retries"};
  ASSERT_EQ(TestCounters::counter_fields().size(), want.size());
  TestCounters c;
  c.frames = 1;
  c.drops = 2;
  c.bytes_total = 3;
  c.retries = 4;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const auto& f = TestCounters::counter_fields()[i];
    EXPECT_EQ(f.field.name, want[i]);
    EXPECT_EQ(f.field.kind, CounterKind::counter);
    EXPECT_FALSE(f.field.description.empty());
    EXPECT_EQ(f.value(c), i + 1) << f.field.name;
  }
  EXPECT_EQ(TestCounters::counter_fields()[1].field.description, "frames dropped");
}

TEST(CounterRegistry, GeneratedSumAddsEveryField) {
  TestCounters a, b;
  a.frames = 10;
  a.retries = 7;
  b.frames = 5;
  b.drops = 3;
  b.bytes_total = std::uint64_t{1} << 40;
  b.retries = 1;
  a += b;
  EXPECT_EQ(a.frames, 15u);
  EXPECT_EQ(a.drops, 3u);
  EXPECT_EQ(a.bytes_total, std::uint64_t{1} << 40);
  EXPECT_EQ(a.retries, 8u);
  EXPECT_EQ(b.frames, 5u) << "the right-hand side must not change";

  // The real ones: every per-peer counter is summed, none forgotten.
  engine::PeerCounters p, q;
  std::uint64_t n = 1;
  for (const auto& f : engine::PeerCounters::kFields) p.*f.member = n++;
  q += p;
  q += p;
  n = 1;
  for (const auto& f : engine::PeerCounters::kFields) EXPECT_EQ(q.*f.member, 2 * n++) << f.field.name;
}

TEST(CounterRegistry, TypedFieldsKeepTheirTypes) {
  static_assert(std::is_same_v<decltype(TestGauges::next), std::uint16_t>);
  static_assert(std::is_same_v<decltype(engine::BroadcastInfo::low), std::uint16_t>);
  TestGauges g;
  g.next = 65535;
  g.held = 12;
  g.up = true;
  CounterGroup group("test", "typed");
  group.add(g);
  ASSERT_EQ(group.samples.size(), 3u);
  EXPECT_EQ(group.samples[0].value, 65535u);
  EXPECT_EQ(group.samples[1].value, 12u);
  EXPECT_EQ(group.samples[2].value, 1u);
  EXPECT_EQ(group.samples[2].kind, CounterKind::gauge);
}

TEST(CounterRegistry, AddChecksFieldAndValueCounts) {
  const CounterField fields[] = {{"a", "one", CounterKind::counter}, {"b", "two", CounterKind::counter}};
  const std::uint64_t values[] = {1, 2, 3};
  CounterGroup g("x", "mismatch");
  EXPECT_THROW(g.add(fields, std::span<const std::uint64_t>(values, 3)), std::invalid_argument);
  g.add(fields, std::span<const std::uint64_t>(values, 2));
  EXPECT_EQ(g.samples.size(), 2u);
}

// A set like the daemon's: nested groups, labelled snapshots, a flag, info,
// a sum that is JSON only, a hand-made JSON group, top-level fields.
CounterGroups sample_groups() {
  CounterGroups g;
  TestCounters c;
  c.frames = 100;
  c.drops = 2;
  g.emplace_back("engine", "the engine").add(c);
  TestGauges b;
  b.next = 7;
  b.held = 3;
  g.emplace_back("engine.broadcast", "our stream").add(b);
  TestCounters sum;
  for (int peer : {2, 3}) {
    TestCounters p;
    p.frames = static_cast<std::uint64_t>(peer * 10);
    p.retries = static_cast<std::uint64_t>(peer);
    g.emplace_back("peers", "per peer", CounterLabels{{"peer", std::to_string(peer)}}).add(p);
    sum += p;
  }
  CounterGroup& total = g.emplace_back("engine.peers_total", "summed");
  total.add(sum);
  total.exported = false;
  CounterGroup& t = g.emplace_back("transport", "a transport \"with\" quotes\\ and\nnewline");
  t.add({"tx_frames", "frames sent", CounterKind::counter}, 5);
  t.add({"link_down", "the link is down", CounterKind::flag}, 1);
  t.info.emplace_back("mode", "AF_XDP \"zero-copy\"\\q\nx");
  g.push_back(
      json_group("api", "by hand", json{{"clients", 2}, {"endpoints", json::array({{{"proto", 16}}})}}));
  g.emplace_back("", "the daemon").add({"idle_sleeps", "sleeps", CounterKind::counter}, 9);
  return g;
}

TEST(CounterRegistry, JsonKeepsTheKeysLocabusctlPrinted) {
  const json j = counters_json(sample_groups());
  EXPECT_EQ(j.at("engine").at("frames"), 100u);
  EXPECT_EQ(j.at("engine").at("drops"), 2u);
  EXPECT_EQ(j.at("engine").at("broadcast").at("next"), 7u);
  EXPECT_EQ(j.at("engine").at("peers_total").at("frames"), 50u);
  EXPECT_EQ(j.at("engine").at("peers_total").at("retries"), 5u);
  EXPECT_EQ(j.at("peers").at("2").at("frames"), 20u);
  EXPECT_EQ(j.at("peers").at("3").at("retries"), 3u);
  EXPECT_EQ(j.at("transport").at("link_down"), true) << "a flag is a JSON boolean";
  EXPECT_EQ(j.at("transport").at("mode"), "AF_XDP \"zero-copy\"\\q\nx");
  EXPECT_EQ(j.at("api").at("clients"), 2);
  EXPECT_EQ(j.at("api").at("endpoints").size(), 1u);
  EXPECT_EQ(j.at("idle_sleeps"), 9u);
  EXPECT_EQ(j.size(), 5u) << j.dump();  // engine, peers, transport, api, idle_sleeps
}

TEST(CounterRegistry, SchemaDescribesEachGroupOnce) {
  const json s = counters_schema(sample_groups());
  ASSERT_TRUE(s.is_array());
  std::vector<std::string> names;
  for (const auto& e : s) names.push_back(e.at("name"));
  EXPECT_EQ(names, (std::vector<std::string>{"engine", "engine.broadcast", "peers", "engine.peers_total",
                                             "transport", "api", ""}));
  const json& peers = s[2];
  EXPECT_EQ(peers.at("labels"), json::array({"peer"}));
  EXPECT_EQ(peers.at("fields").size(), 4u);
  EXPECT_EQ(peers.at("fields")[0].at("kind"), "counter");
  EXPECT_EQ(peers.at("fields")[0].at("description"), "frames seen");
  EXPECT_EQ(s[1].at("fields")[0].at("kind"), "gauge");
  EXPECT_EQ(s[4].at("fields")[1].at("kind"), "flag");
  EXPECT_EQ(s[3].at("exported"), false);
  EXPECT_EQ(s[5].at("json"), true);
}

TEST(CounterRegistry, JsonAndSchemaGiveTheGroupsBack) {
  const CounterGroups in = sample_groups();
  const CounterGroups out = counters_from_json(counters_json(in), counters_schema(in));
  ASSERT_EQ(out.size(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    SCOPED_TRACE(in[i].name);
    EXPECT_EQ(out[i].name, in[i].name);
    EXPECT_EQ(out[i].description, in[i].description);
    EXPECT_EQ(out[i].labels, in[i].labels);
    EXPECT_EQ(out[i].info, in[i].info);
    EXPECT_EQ(out[i].exported, in[i].exported);
    ASSERT_EQ(out[i].samples.size(), in[i].samples.size());
    for (std::size_t k = 0; k < in[i].samples.size(); ++k) {
      EXPECT_EQ(out[i].samples[k].name, in[i].samples[k].name);
      EXPECT_EQ(out[i].samples[k].kind, in[i].samples[k].kind);
      EXPECT_EQ(out[i].samples[k].value, in[i].samples[k].value);
      EXPECT_EQ(out[i].samples[k].description, in[i].samples[k].description);
    }
    ASSERT_EQ(out[i].json != nullptr, in[i].json != nullptr);
  }
  // Same exposition from the round trip as from the source.
  EXPECT_EQ(prometheus_text(out, {{"node", "1"}}), prometheus_text(in, {{"node", "1"}}));
  EXPECT_THROW(counters_from_json(json::object(), json::object()), std::invalid_argument);
  EXPECT_THROW(counters_from_json(counters_json(in), json::array({{{"name", "engine"}}})),
               std::invalid_argument);
}

// ---- the Prometheus text exposition, parsed back -----------------------------------

struct Family {
  int help = 0, type = 0;
  std::string help_text, type_text;
  std::vector<std::pair<std::string, std::string>> samples;  // labels text, value
};

bool valid_name(const std::string& n) {
  if (n.empty()) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
                    (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

// Parses the exposition strictly enough to fail on what Prometheus rejects:
// every line HELP, TYPE or a sample; each family's HELP and TYPE once,
// before its samples; a family's samples together; valid names.
std::map<std::string, Family> parse_exposition(const std::string& text) {
  std::map<std::string, Family> out;
  std::set<std::string> closed;  // families whose samples ended
  std::string current;
  std::size_t pos = 0;
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "the exposition ends with a newline";
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    const std::string line = text.substr(pos, nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    EXPECT_FALSE(line.empty()) << "no empty lines";
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const bool help = line[2] == 'H';
      const std::string rest = line.substr(7);
      const std::size_t sp = rest.find(' ');
      EXPECT_NE(sp, std::string::npos) << line;
      const std::string name = rest.substr(0, sp);
      EXPECT_TRUE(valid_name(name)) << name;
      EXPECT_FALSE(closed.count(name)) << name << ": metadata after its samples";
      if (!current.empty() && current != name) closed.insert(current);
      current = name;
      Family& f = out[name];
      EXPECT_TRUE(f.samples.empty()) << name << ": metadata after its samples";
      (help ? f.help : f.type)++;
      (help ? f.help_text : f.type_text) = rest.substr(sp + 1);
      if (help)
        EXPECT_EQ(f.type, 0) << name << ": HELP after TYPE";
      else
        EXPECT_TRUE(f.type_text == "counter" || f.type_text == "gauge") << line;
      continue;
    }
    EXPECT_NE(line[0], '#') << "unknown comment: " << line;
    std::size_t end = line.find_first_of("{ ");
    const std::string name = line.substr(0, end);
    EXPECT_TRUE(valid_name(name)) << line;
    std::string labels;
    if (end != std::string::npos && line[end] == '{') {
      // Up to the closing brace outside quotes.
      bool quoted = false;
      std::size_t i = end + 1;
      for (; i < line.size(); ++i) {
        if (quoted && line[i] == '\\') {
          ++i;
          continue;
        }
        if (line[i] == '"') quoted = !quoted;
        if (!quoted && line[i] == '}') break;
      }
      EXPECT_LT(i, line.size()) << "unterminated labels: " << line;
      labels = line.substr(end + 1, i - end - 1);
      end = i + 1;
    }
    EXPECT_EQ(line[end], ' ') << line;
    const std::string value = line.substr(end + 1);
    EXPECT_FALSE(value.empty()) << line;
    for (const char c : value) EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(c))) << line;
    EXPECT_TRUE(out.count(name)) << name << ": a sample without HELP/TYPE";
    EXPECT_EQ(current, name) << name << ": samples not together with their family";
    EXPECT_FALSE(closed.count(name)) << name << ": samples not together";
    out[name].samples.emplace_back(labels, value);
  }
  return out;
}

TEST(CounterRegistry, PrometheusExpositionParsesBack) {
  const std::string text = prometheus_text(sample_groups(), {{"node", "1"}});
  const auto families = parse_exposition(text);
  for (const auto& [name, f] : families) {
    SCOPED_TRACE(name);
    EXPECT_EQ(f.help, 1);
    EXPECT_EQ(f.type, 1);
    EXPECT_FALSE(f.samples.empty());
    EXPECT_EQ(f.type_text == "counter", name.ends_with("_total")) << "counters, and only they, end in _total";
    for (const auto& [labels, value] : f.samples) EXPECT_EQ(labels.rfind("node=\"1\"", 0), 0u) << labels;
  }
  // What must be there, with the values given.
  ASSERT_TRUE(families.count("locabus_engine_frames_total"));
  EXPECT_EQ(families.at("locabus_engine_frames_total").samples.at(0).second, "100");
  EXPECT_EQ(families.at("locabus_engine_frames_total").help_text, "frames seen");
  ASSERT_TRUE(families.count("locabus_engine_bytes_total")) << "no _total_total";
  EXPECT_FALSE(families.count("locabus_engine_bytes_total_total"));
  ASSERT_TRUE(families.count("locabus_engine_broadcast_next"));
  EXPECT_EQ(families.at("locabus_engine_broadcast_next").type_text, "gauge");
  const Family& pf = families.at("locabus_peers_frames_total");
  ASSERT_EQ(pf.samples.size(), 2u) << "one family, one sample per peer";
  EXPECT_EQ(pf.samples[0], (std::pair<std::string, std::string>{"node=\"1\",peer=\"2\"", "20"}));
  EXPECT_EQ(pf.samples[1], (std::pair<std::string, std::string>{"node=\"1\",peer=\"3\"", "30"}));
  EXPECT_EQ(families.at("locabus_transport_link_down").type_text, "gauge");
  EXPECT_EQ(families.at("locabus_transport_link_down").samples.at(0).second, "1");
  const Family& info = families.at("locabus_transport_info");
  EXPECT_EQ(info.samples.at(0).first, "node=\"1\",mode=\"AF_XDP \\\"zero-copy\\\"\\\\q\\nx\"");
  EXPECT_EQ(info.samples.at(0).second, "1");
  EXPECT_EQ(families.at("locabus_transport_info").help_text, "a transport \"with\" quotes\\\\ and\\nnewline");
  EXPECT_TRUE(families.count("locabus_idle_sleeps_total"));
  // JSON only: sums and hand-made groups.
  for (const auto& [name, f] : families) {
    EXPECT_EQ(name.find("peers_total"), std::string::npos) << name;
    EXPECT_EQ(name.find("api"), std::string::npos) << name;
  }
  // Every exported sample is there: 4 + 3 + 2 x 4 + 2 + info + idle_sleeps.
  std::size_t samples = 0;
  for (const auto& [name, f] : families) samples += f.samples.size();
  EXPECT_EQ(samples, 4u + 3u + 8u + 2u + 1u + 1u) << text;
}

TEST(CounterRegistry, PrometheusRefusesInvalidNames) {
  CounterGroups g;
  g.emplace_back("bad-name", "x").add({"a", "a", CounterKind::counter}, 1);
  EXPECT_THROW(prometheus_text(g), std::invalid_argument);
  g.clear();
  g.emplace_back("ok", "x").add({"a-b", "a", CounterKind::counter}, 1);
  EXPECT_THROW(prometheus_text(g), std::invalid_argument);
  g.clear();
  g.emplace_back("ok", "x", CounterLabels{{"__reserved", "1"}}).add({"a", "a", CounterKind::counter}, 1);
  EXPECT_THROW(prometheus_text(g), std::invalid_argument);
  g.clear();
  g.emplace_back("ok", "x").add({"a", "a", CounterKind::counter}, 1);
  EXPECT_THROW(prometheus_text(g, {{"bad label", "1"}}), std::invalid_argument);
  EXPECT_NO_THROW(prometheus_text(g, {{"node", "1"}}));
  // One family, two kinds: refused rather than exposed inconsistently.
  g.emplace_back("ok", "y").add({"a", "a", CounterKind::gauge}, 1);
  g.emplace_back("ok", "z").add({"a_total", "a", CounterKind::gauge}, 1);
  EXPECT_THROW(prometheus_text(g), std::invalid_argument);

  EXPECT_TRUE(valid_metric_name("locabus_engine_rx_frames_total"));
  EXPECT_TRUE(valid_metric_name("a:b_c9"));
  EXPECT_FALSE(valid_metric_name(""));
  EXPECT_FALSE(valid_metric_name("1a"));
  EXPECT_FALSE(valid_metric_name("a-b"));
  EXPECT_TRUE(valid_label_name("peer"));
  EXPECT_FALSE(valid_label_name("__name__"));
  EXPECT_FALSE(valid_label_name("a:b"));
}

// ---- the real groups ------------------------------------------------------------

// Takes every frame, receives what the test queued.
class QueueTransport final : public engine::Transport {
 public:
  wire::MacAddress mac() const noexcept override { return wire::MacAddress{{2, 0, 0, 0, 0, 1}}; }
  std::size_t send(std::span<const engine::FrameBytes> frames) override { return frames.size(); }
  std::size_t receive(std::size_t max, FunctionRef<void(engine::FrameBytes)> on_frame) override {
    std::size_t n = 0;
    for (; n < max && !rx.empty(); ++n) {
      on_frame(rx.front());
      rx.pop_front();
    }
    return n;
  }
  std::deque<std::vector<std::byte>> rx;
};

TEST(CounterRegistry, EngineAndXdpGroupsRenderFromTheirDefinitions) {
  QueueTransport t;
  t.rx.push_back(test::FrameBuilder()
                     .type(wire::PacketType::heartbeat)
                     .from(2)
                     .to(wire::kBroadcast)
                     .corrupt_csum()
                     .build());
  engine::ManualClock clock;
  engine::Engine e(engine::EngineConfig{}, t, clock, 1);
  e.do_work();
  CounterGroups g;
  e.counters(g);
  const std::size_t engine_groups = g.size();
  t.counters(g);
  EXPECT_EQ(g.size(), engine_groups) << "a transport has no counters by default";
  fastpath::CounterValues xdp{};
  xdp[LOCABUS_CTR_drop_csum] = 4;
  g.push_back(fastpath::counter_group(xdp));

  const json j = counters_json(g);
  EXPECT_EQ(j.at("engine").at("rx_frames"), 1u);
  EXPECT_EQ(j.at("engine").at("rx_invalid").at("bad_csum"), 1u);
  EXPECT_EQ(j.at("engine").at("rx_invalid").at("short_frame"), 0u);
  EXPECT_EQ(j.at("engine").at("broadcast").at("held"), 0u);
  EXPECT_TRUE(j.at("engine").contains("peers_total"));
  EXPECT_EQ(j.at("engine").at("peers_total").size(), engine::PeerCounters::counter_fields().size());
  EXPECT_EQ(j.at("xdp").at("drop_csum"), 4u);
  EXPECT_EQ(j.at("xdp").size(), static_cast<std::size_t>(LOCABUS_CTR__COUNT));
  // Every engine counter, none hand-listed: the struct's fields, then rx_invalid and broadcast.
  EXPECT_EQ(j.at("engine").size(), engine::EngineStats::counter_fields().size() + 3);

  const auto families = parse_exposition(prometheus_text(g, {{"node", "1"}}));
  EXPECT_EQ(families.at("locabus_engine_rx_invalid_bad_csum_total").samples.at(0).second, "1");
  EXPECT_EQ(families.at("locabus_xdp_drop_csum_total").samples.at(0).second, "4");
  EXPECT_EQ(families.at("locabus_engine_broadcast_held").type_text, "gauge");
  for (const auto& [name, f] : families) {
    EXPECT_EQ(f.help, 1) << name;
    EXPECT_EQ(f.type, 1) << name;
    EXPECT_FALSE(f.help_text.empty()) << name;
  }
}

}  // namespace
}  // namespace locabus
