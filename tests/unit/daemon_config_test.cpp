// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusd's configuration: the TOML file, its validation, its errors.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.hpp"
#include "daemon/config.hpp"

namespace locabus::daemon {
namespace {

class ConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("locabusd-test-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".toml");
  }
  void TearDown() override { std::filesystem::remove(path_); }
  Config load(const std::string& text) {
    std::ofstream(path_) << text;
    Config c;
    load_toml(path_, c);
    return c;
  }
  std::string error_of(const std::string& text) {
    try {
      load(text);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }
  std::filesystem::path path_;
};

TEST_F(ConfigFile, TheShippedExampleLoadsAndIsValid) {
  Config c;
  load_toml(std::filesystem::path(LOCABUS_SOURCE_DIR) / "dist/locabusd.toml", c);
  EXPECT_EQ(c.iface, "eth0");
  EXPECT_EQ(c.datapath, transport::Datapath::automatic);
  EXPECT_EQ(c.engine.window, 1024);
  EXPECT_EQ(c.engine.ack_delay, std::chrono::milliseconds(200));
  EXPECT_EQ(c.api_mode, 0660u);
  EXPECT_EQ(c.nak_dedup_us, 2000u);
  EXPECT_NO_THROW(c.validate());
}

TEST_F(ConfigFile, ReadsEveryKind) {
  const Config c = load(R"(
iface = "veth3"
node_id = "0x201"
datapath = "packet"
busy_poll = true
idle_spin_us = 120
run_dir = "/tmp/x"
api_group = "wheel"
api_mode = "0600"
[xdp]
attach_mode = "generic"
max_peers = 77
nak_dedup_us = 1500
[engine]
window = 64
rto_min_ms = 300
dead_after_ms = 9000
)");
  EXPECT_EQ(c.iface, "veth3");
  EXPECT_EQ(c.node_id, 0x201);
  EXPECT_EQ(c.datapath, transport::Datapath::packet);
  EXPECT_TRUE(c.busy_poll);
  EXPECT_EQ(c.idle_spin_us, 120u);
  EXPECT_EQ(c.socket_path(), "/tmp/x/locabusd.sock");
  EXPECT_EQ(c.api_group, "wheel");
  EXPECT_EQ(c.api_mode, 0600u);
  EXPECT_EQ(c.attach_mode, fastpath::AttachMode::generic);
  EXPECT_EQ(c.max_peers, 77u);
  EXPECT_EQ(c.nak_dedup_us, 1500u);
  EXPECT_EQ(c.engine.window, 64);
  EXPECT_EQ(c.engine.rto_min, std::chrono::milliseconds(300));
  EXPECT_EQ(c.engine.dead_after, std::chrono::milliseconds(9000));
}

TEST_F(ConfigFile, NakDedupDefaultsTo2msAndZeroTurnsItOff) {
  EXPECT_EQ(Config{}.nak_dedup_us, 2000u);
  EXPECT_EQ(load("[xdp]\nmax_peers = 5\n").nak_dedup_us, 2000u);  // absent: unchanged
  EXPECT_EQ(load("[xdp]\nnak_dedup_us = 0\n").nak_dedup_us, 0u);
  EXPECT_EQ(load("[xdp]\nnak_dedup_us = 1000000\n").nak_dedup_us, 1000000u);
  EXPECT_NE(
      error_of("[xdp]\nnak_dedup_us = 1000001\n").find("xdp.nak_dedup_us: 1000001 is outside 0..1000000"),
      std::string::npos);
  EXPECT_NE(error_of("[xdp]\nnak_dedup_us = -1\n").find("xdp.nak_dedup_us"), std::string::npos);
  EXPECT_NE(error_of("[xdp]\nnak_dedup_us = \"2ms\"\n").find("expected an integer"), std::string::npos);
  // It belongs to [xdp]: at the top level it is an unknown key.
  EXPECT_NE(error_of("nak_dedup_us = 10\n").find("nak_dedup_us: unknown key"), std::string::npos);
}

TEST_F(ConfigFile, MonitorAndMetricsKeys) {
  const Config d = load("");
  EXPECT_TRUE(d.monitor.enabled);
  EXPECT_EQ(d.monitor.sample_ms, 1000u);
  EXPECT_EQ(d.monitor.broadcast_ms, 5000u);
  EXPECT_TRUE(d.metrics_address.empty()) << "no exporter unless asked for";
  const Config c = load(R"(
iface = "eth1"
metrics_address = "[::1]:9477"
[monitor]
enabled = false
sample_ms = 200
broadcast_ms = 1000
stale_ms = 3000
remove_ms = 9000
files = false
)");
  EXPECT_FALSE(c.monitor.enabled);
  EXPECT_EQ(c.monitor.sample_ms, 200u);
  EXPECT_EQ(c.monitor.broadcast_ms, 1000u);
  EXPECT_EQ(c.monitor.stale_ms, 3000u);
  EXPECT_EQ(c.monitor.remove_ms, 9000u);
  EXPECT_FALSE(c.monitor.files);
  EXPECT_EQ(c.metrics_address, "[::1]:9477");
  EXPECT_NO_THROW(c.validate());
  EXPECT_NE(error_of("[monitor]\nsample_ms = 50\n").find("monitor.sample_ms: 50 is outside 100..60000"),
            std::string::npos);
  EXPECT_NE(error_of("[monitor]\nsampel_ms = 500\n").find("monitor.sampel_ms: unknown key"),
            std::string::npos);
}

TEST(Config, MonitorTimesMustGrowAndTheMetricsAddressMustParse) {
  Config c;
  c.iface = "eth0";
  c.monitor.stale_ms = c.monitor.broadcast_ms;  // a node would be stale between two broadcasts
  EXPECT_THROW(c.validate(), Error);
  c.monitor = {};
  c.monitor.sample_ms = 6000;  // samples rarer than broadcasts
  EXPECT_THROW(c.validate(), Error);
  c.monitor = {};
  for (const char* bad : {"9477", ":9477", "host:", "host:65536", "::1:9477", "h:12ab"}) {
    c.metrics_address = bad;
    EXPECT_THROW(c.validate(), Error) << bad;
  }
  for (const char* good : {"0.0.0.0:9477", "127.0.0.1:0", "[::]:9477", "localhost:80"}) {
    c.metrics_address = good;
    EXPECT_NO_THROW(c.validate()) << good;
  }
  EXPECT_EQ(parse_host_port("[::1]:9477")->first, "::1");
  EXPECT_EQ(parse_host_port("10.0.0.1:9477")->second, 9477);
}

TEST_F(ConfigFile, NodeIdAsInteger) { EXPECT_EQ(load("node_id = 513\n").node_id, 513); }

TEST_F(ConfigFile, UnknownKeysAreErrorsThatNameTheKey) {
  EXPECT_NE(error_of("ifcae = \"eth0\"\n").find("ifcae: unknown key"), std::string::npos);
  EXPECT_NE(error_of("[engine]\nwindw = 3\n").find("engine.windw: unknown key"), std::string::npos);
}

TEST_F(ConfigFile, BadValuesNameTheKeyAndTheRange) {
  EXPECT_NE(error_of("node_id = 65535\n").find("node_id"), std::string::npos);
  EXPECT_NE(error_of("datapath = \"dpdk\"\n").find("'dpdk' is not auto, xdp or packet"), std::string::npos);
  EXPECT_NE(error_of("api_mode = \"0999\"\n").find("api_mode"), std::string::npos);
  EXPECT_NE(error_of("[engine]\nwindow = 40000\n").find("40000 is outside 1..16000"), std::string::npos);
  EXPECT_NE(error_of("busy_poll = \"yes\"\n").find("expected true or false"), std::string::npos);
  EXPECT_NE(error_of("idle_spin_us = 10001\n").find("10001 is outside 0..10000"), std::string::npos);
}

TEST_F(ConfigFile, SyntaxErrorsGiveTheLine) {
  EXPECT_NE(error_of("iface = \"eth0\"\nwindow = = 3\n").find(":2:"), std::string::npos);
}

TEST(Config, ValidateChecksTheEngineAndTheRings) {
  Config c;
  EXPECT_THROW(c.validate(), Error);  // no interface
  c.iface = "eth0";
  EXPECT_NO_THROW(c.validate());
  c.ring_bytes = 3 << 20;  // not a power of two
  EXPECT_THROW(c.validate(), Error);
  c.ring_bytes = 1 << 20;
  c.nak_dedup_us = 1'000'001;  // above 1 s
  EXPECT_THROW(c.validate(), Error);
  c.nak_dedup_us = 0;
  EXPECT_NO_THROW(c.validate());
  c.engine.rto_min = std::chrono::milliseconds(100);  // below the delayed ACK
  EXPECT_THROW(c.validate(), Error);
}

TEST(Config, ParseMode) {
  EXPECT_EQ(parse_mode("0660"), 0660u);
  EXPECT_EQ(parse_mode("600"), 0600u);
  EXPECT_FALSE(parse_mode("0x1"));
  EXPECT_FALSE(parse_mode(""));
  EXPECT_FALSE(parse_mode("07777"));
}

}  // namespace
}  // namespace locabus::daemon
