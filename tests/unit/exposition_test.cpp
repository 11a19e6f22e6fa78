// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The Prometheus exporter (daemon/metrics.hpp) against a fake renderer: a
// thread that plays the daemon's loop (polls wait_fd(), calls serve()).
// Scrapes over real TCP on 127.0.0.1 with a minimal HTTP/1.1 client (no
// httplib client: nothing here needs more than these few bytes). And the names the
// daemon serves: the counter registry's, the monitor's and
// locabus_build_info never share a family.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "common/version.hpp"
#include "daemon/config.hpp"
#include "daemon/daemon.hpp"
#include "daemon/metrics.hpp"
#include "daemon/server.hpp"
#include "fastpath/counters.hpp"
#include "monitor/exposition.hpp"
#include "sim/sim_cluster.hpp"

namespace locabus::daemon {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kExpositionType = "text/plain; version=0.0.4; charset=utf-8";

// ---- a minimal HTTP client ------------------------------------------------------------

struct HttpReply {
  int status = 0;                              // 0: no answer (connection failed or closed early)
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  std::string header(const std::string& lower_name) const {
    const auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

std::uint16_t port_of(const std::string& address) {
  return static_cast<std::uint16_t>(std::stoul(address.substr(address.rfind(':') + 1)));
}

HttpReply http_request(std::uint16_t port, const std::string& method, const std::string& target,
                       std::chrono::seconds timeout = 10s) {
  HttpReply r;
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return r;
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return r;
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  req += method == "POST" ? "Content-Length: 0\r\n\r\n" : "\r\n";
  if (::send(s.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return r;
  std::string raw;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  const auto head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos || !raw.starts_with("HTTP/1.1 ")) return r;
  r.status = std::atoi(raw.c_str() + 9);
  std::size_t at = raw.find("\r\n") + 2;
  while (at < head_end) {
    const auto eol = raw.find("\r\n", at);
    const std::string line = raw.substr(at, eol - at);
    const auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      r.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
    }
    at = eol + 2;
  }
  r.body = raw.substr(head_end + 4);
  return r;
}

HttpReply http_get(std::uint16_t port, const std::string& target, std::chrono::seconds timeout = 10s) {
  return http_request(port, "GET", target, timeout);
}

// ---- the daemon's loop, faked -------------------------------------------------------

/// Plays the daemon: waits on the exporter's fd and serves with `render`,
/// recording the scopes it rendered.
class FakeLoop {
 public:
  FakeLoop(MetricsExporter& exporter, std::function<std::string(MetricsScope)> render)
      : exporter_(exporter), render_(std::move(render)), thread_([this] { run(); }) {}
  ~FakeLoop() {
    stop_ = true;
    thread_.join();
  }
  std::vector<MetricsScope> rendered() const {
    std::lock_guard lock(mutex_);
    return rendered_;
  }

 private:
  void run() {
    pollfd p{exporter_.wait_fd(), POLLIN, 0};
    while (!stop_) {
      if (::poll(&p, 1, 20) <= 0) continue;
      exporter_.serve([this](MetricsScope s) {
        {
          std::lock_guard lock(mutex_);
          rendered_.push_back(s);
        }
        return render_(s);
      });
    }
  }

  MetricsExporter& exporter_;
  std::function<std::string(MetricsScope)> render_;
  mutable std::mutex mutex_;
  std::vector<MetricsScope> rendered_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: starts when the rest is ready
};

std::string fake_text(MetricsScope s) {
  return std::string("# HELP fake_up a fake\n# TYPE fake_up gauge\nfake_up{scope=\"") + to_string(s) +
         "\"} 1\n";
}

// ---- the exporter ---------------------------------------------------------------------

TEST(MetricsExporter, ServesBothScopesFromTheLoopWithTheExpositionContentType) {
  MetricsExporter e("127.0.0.1:0");
  FakeLoop loop(e, fake_text);
  const auto port = port_of(e.address());

  const HttpReply plain = http_get(port, "/metrics");
  EXPECT_EQ(plain.status, 200);
  EXPECT_EQ(plain.header("content-type"), kExpositionType);
  EXPECT_EQ(plain.body, fake_text(MetricsScope::local));

  const HttpReply local = http_get(port, "/metrics?scope=local");
  EXPECT_EQ(local.status, 200);
  EXPECT_EQ(local.body, fake_text(MetricsScope::local));

  const HttpReply cluster = http_get(port, "/metrics?scope=cluster");
  EXPECT_EQ(cluster.status, 200);
  EXPECT_EQ(cluster.header("content-type"), kExpositionType);
  EXPECT_EQ(cluster.body, fake_text(MetricsScope::cluster));

  EXPECT_EQ(loop.rendered(),
            (std::vector<MetricsScope>{MetricsScope::local, MetricsScope::local, MetricsScope::cluster}));
  const MetricsCounters c = e.counters();
  EXPECT_EQ(c.scrapes_local, 2u);
  EXPECT_EQ(c.scrapes_cluster, 1u);
  EXPECT_EQ(c.timeouts + c.failures + c.bad_requests, 0u);
  EXPECT_FALSE(e.pending());
}

TEST(MetricsExporter, UnknownScopeIs400UnknownPathIs404PostIs405AndTheIndexLinksBoth) {
  MetricsExporter e("127.0.0.1:0");
  FakeLoop loop(e, fake_text);
  const auto port = port_of(e.address());

  const HttpReply bad = http_get(port, "/metrics?scope=everything");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("unknown scope 'everything'"), std::string::npos) << bad.body;
  EXPECT_NE(bad.body.find("scope=local"), std::string::npos) << bad.body;
  EXPECT_NE(bad.body.find("scope=cluster"), std::string::npos) << bad.body;

  const HttpReply nope = http_get(port, "/nope");
  EXPECT_EQ(nope.status, 404);
  EXPECT_NE(nope.body.find("/nope"), std::string::npos) << nope.body;
  EXPECT_NE(nope.body.find("/metrics"), std::string::npos) << nope.body;

  const HttpReply index = http_get(port, "/");
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.header("content-type").rfind("text/html", 0), 0u) << index.header("content-type");
  EXPECT_NE(index.body.find("href=\"/metrics\""), std::string::npos);
  EXPECT_NE(index.body.find("href=\"/metrics?scope=cluster\""), std::string::npos);

  const HttpReply post = http_request(port, "POST", "/metrics");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.header("allow"), "GET, HEAD");
  EXPECT_NE(post.body.find("GET only"), std::string::npos) << post.body;

  EXPECT_TRUE(loop.rendered().empty()) << "a refused request reached the daemon";
  EXPECT_EQ(e.counters().bad_requests, 3u);
}

TEST(MetricsExporter, ARendererThatNeverAnswersGives503WithinTheTimeout) {
  MetricsOptions o;
  o.answer_timeout = 300ms;
  MetricsExporter e("127.0.0.1:0", o);  // no loop: nobody serves
  const auto start = Clock::now();
  const HttpReply r = http_get(port_of(e.address()), "/metrics");
  const auto took = Clock::now() - start;
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("did not answer in time"), std::string::npos) << r.body;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 300ms + 1500ms) << "the 503 came late";
  EXPECT_EQ(e.counters().timeouts, 1u);
  // The scrape is still queued for the loop (it is told when it serves).
  EXPECT_TRUE(e.pending());
}

TEST(MetricsExporter, ARendererThatThrowsGives500WithItsText) {
  MetricsExporter e("127.0.0.1:0");
  FakeLoop loop(e, [](MetricsScope) -> std::string { throw std::invalid_argument("bad metric name 'x y'"); });
  const HttpReply r = http_get(port_of(e.address()), "/metrics");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("bad metric name 'x y'"), std::string::npos) << r.body;
  EXPECT_EQ(e.counters().failures, 1u);
}

TEST(MetricsExporter, DestructionWhileAScrapeWaitsAnswersItAndReturnsPromptly) {
  MetricsOptions o;
  o.answer_timeout = 30s;  // far beyond the bound below: destruction must not wait for it
  auto e = std::make_unique<MetricsExporter>("127.0.0.1:0", o);
  const auto port = port_of(e->address());
  auto reply = std::async(std::launch::async, [port] { return http_get(port, "/metrics"); });
  const auto deadline = Clock::now() + 5s;
  while (!e->pending() && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(e->pending()) << "the scrape never reached the queue";

  const auto start = Clock::now();
  e.reset();
  EXPECT_LT(Clock::now() - start, 2s) << "the destructor waited for the scrape's timeout";
  ASSERT_EQ(reply.wait_for(5s), std::future_status::ready);
  const HttpReply r = reply.get();
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("shutting down"), std::string::npos) << r.body;
}

// A client that sends its request a byte at a time, forever (each byte
// within httplib's read timeout), until the server closes the connection.
// Returns how long the connection lived, or nullopt if it outlived `limit`.
std::optional<std::chrono::milliseconds> dribble(std::uint16_t port, std::chrono::milliseconds every,
                                                 std::chrono::milliseconds limit,
                                                 std::atomic<bool>* connected) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!s || ::connect(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return std::nullopt;
  if (connected) connected->store(true);
  const auto start = Clock::now();
  const std::string req = "GET /metrics HTTP/1.1\r\nX-Slow: ";
  for (std::size_t i = 0; Clock::now() - start < limit; ++i) {
    const char c = i < req.size() ? req[i] : 'a';
    if (::send(s.get(), &c, 1, MSG_NOSIGNAL) != 1) break;  // the server shut the connection
    pollfd p{s.get(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, static_cast<int>(every.count())) > 0) break;  // closed (or answered)
  }
  const auto lived = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  if (lived >= limit) return std::nullopt;
  return lived;
}

TEST(MetricsExporter, AClientThatDribblesItsRequestIsCutAtTheConnectionDeadline) {
  MetricsOptions o;
  o.threads = 1;  // the one worker it would hold
  o.connection_deadline = 1000ms;
  MetricsExporter e("127.0.0.1:0", o);
  FakeLoop loop(e, fake_text);
  const auto port = port_of(e.address());
  auto slow = std::async(std::launch::async, [port] { return dribble(port, 200ms, 10s, nullptr); });
  std::this_thread::sleep_for(300ms);
  // Behind it, a scrape waits for the only worker: answered once the slow
  // connection is cut, not after it gives up.
  const auto start = Clock::now();
  const HttpReply r = http_get(port, "/metrics", 10s);
  EXPECT_EQ(r.status, 200);
  EXPECT_LT(Clock::now() - start, 2500ms) << "the scrape waited beyond the slow connection's deadline";
  const auto lived = slow.get();
  ASSERT_TRUE(lived.has_value()) << "the dribbling connection was never cut";
  EXPECT_GE(*lived, 900ms) << "cut before its deadline";
  EXPECT_LT(*lived, 2000ms) << "cut long after its deadline of 1 s";
}

TEST(MetricsExporter, DestructionCutsADribblingClientPromptly) {
  MetricsOptions o;
  o.connection_deadline = 60'000ms;  // far away: only the exporter's stop may cut it
  auto e = std::make_unique<MetricsExporter>("127.0.0.1:0", o);
  const auto port = port_of(e->address());
  std::atomic<bool> connected{false};
  auto slow =
      std::async(std::launch::async, [port, &connected] { return dribble(port, 200ms, 20s, &connected); });
  while (!connected.load()) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(500ms);
  const auto start = Clock::now();
  e.reset();
  EXPECT_LT(Clock::now() - start, 1500ms) << "the exporter's stop waited for a dribbling client";
  const auto lived = slow.get();
  EXPECT_TRUE(lived.has_value()) << "the dribbling connection outlived the exporter";
}

TEST(MetricsExporter, ManyScrapesAtOnceAreAllAnswered) {
  MetricsExporter e("127.0.0.1:0");  // 2 worker threads: the rest wait their turn
  FakeLoop loop(e, fake_text);
  const auto port = port_of(e.address());
  std::vector<std::future<HttpReply>> replies;
  for (int i = 0; i < 8; ++i)
    replies.push_back(std::async(std::launch::async, [port, i] {
      return http_get(port, i % 2 ? "/metrics?scope=cluster" : "/metrics");
    }));
  for (int i = 0; i < 8; ++i) {
    const HttpReply r = replies[static_cast<std::size_t>(i)].get();
    EXPECT_EQ(r.status, 200) << i;
    EXPECT_EQ(r.body, fake_text(i % 2 ? MetricsScope::cluster : MetricsScope::local)) << i;
  }
  const MetricsCounters c = e.counters();
  // One render per scope per serve() call at most, so never more than the scrapes.
  EXPECT_GE(c.scrapes_local, 1u);
  EXPECT_LE(c.scrapes_local, 4u);
  EXPECT_GE(c.scrapes_cluster, 1u);
  EXPECT_LE(c.scrapes_cluster, 4u);
}

TEST(MetricsExporter, PortZeroBindsARealPortAndReportsIt) {
  MetricsExporter e("127.0.0.1:0");
  const std::string a = e.address();
  ASSERT_EQ(a.rfind("127.0.0.1:", 0), 0u) << a;
  const auto port = port_of(a);
  EXPECT_GT(port, 0);
  EXPECT_EQ(e.url(), "http://" + a + "/metrics");
  EXPECT_EQ(http_get(port, "/").status, 200);
}

TEST(MetricsExporter, AnIpv6AddressIsBoundAndReportedInBrackets) {
  {
    UniqueFd probe(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    if (!probe || ::bind(probe.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
      GTEST_SKIP() << "no IPv6 loopback here";
  }
  MetricsExporter e("[::1]:0");
  const std::string a = e.address();
  ASSERT_EQ(a.rfind("[::1]:", 0), 0u) << a;
  EXPECT_EQ(e.url(), "http://" + a + "/metrics");
  UniqueFd s(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 to{};
  to.sin6_family = AF_INET6;
  to.sin6_addr = in6addr_loopback;
  to.sin6_port = htons(port_of(a));
  EXPECT_EQ(::connect(s.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to), 0) << std::strerror(errno);
}

TEST(MetricsExporter, ATakenPortIsAnErrorNamingTheAddress) {
  // Taken by a plain listening socket ...
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(s.get(), 1), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string taken = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  try {
    MetricsExporter e(taken);
    FAIL() << "bound " << taken << " although it is taken";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), EADDRINUSE);
    EXPECT_NE(std::string(err.what()).find(taken), std::string::npos) << err.what();
    EXPECT_NE(err.hint().find("metrics_address"), std::string::npos) << err.hint();
  }
  // ... and by another exporter (no SO_REUSEPORT sharing of one port).
  MetricsExporter first("127.0.0.1:0");
  try {
    MetricsExporter second(first.address());
    FAIL() << "a second exporter bound " << first.address();
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), EADDRINUSE);
    EXPECT_NE(std::string(err.what()).find(first.address()), std::string::npos) << err.what();
  }
}

TEST(MetricsExporter, AMalformedAddressIsAnError) {
  for (const char* bad : {"9477", "localhost:", "::1:9477", "host:99999"}) {
    try {
      MetricsExporter e(bad);
      FAIL() << "accepted " << bad;
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), EINVAL) << bad;
      EXPECT_NE(std::string(err.what()).find(bad), std::string::npos) << err.what();
    }
  }
}

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

TEST(MetricsExporter, AnIdleExporterUsesNoCpu) {
  MetricsExporter e("127.0.0.1:0");
  ASSERT_EQ(http_get(port_of(e.address()), "/").status, 200);  // its threads have run once
  const double before = cpu_seconds();
  std::this_thread::sleep_for(1s);
  const double used = cpu_seconds() - before;
  // Only the exporter's threads run here (this one sleeps): blocked in
  // accept() and on a condition variable, they use nothing measurable.
  EXPECT_LT(used, 0.02) << "an idle exporter used " << used << " s of CPU in 1 s";
}

// ---- the text ---------------------------------------------------------------------------

TEST(MetricsText, BuildInfoAndFamilies) {
  EXPECT_EQ(build_info_text(7, "1.2\"3"),
            "# HELP locabus_build_info the locabusd serving this node (its version); always 1\n"
            "# TYPE locabus_build_info gauge\n"
            "locabus_build_info{node=\"7\",version=\"1.2\\\"3\"} 1\n");
  EXPECT_EQ(
      exposition_families("# HELP a x\n# TYPE a counter\na_total 1\n# TYPE b gauge\nb 2\n# TYPE a gauge"),
      (std::vector<std::string>{"a", "b", "a"}));
}

class NoIntrospection final : public Introspection {
 public:
  nlohmann::json status() const override { return nlohmann::json::object(); }
  nlohmann::json peers() const override { return nlohmann::json::array(); }
  nlohmann::json counters() const override { return nlohmann::json::object(); }
};

monitor::NodeView full_row(std::uint16_t node, bool self) {
  monitor::NodeView v;
  v.node = node;
  v.self = self;
  monitor::NodeStats& s = v.stats;
  s.hostname = "host" + std::to_string(node);
  s.cpus = 4;
  s.sampled_at_ms = 1'700'000'000'000;
  for (std::size_t i = 0; i < s.cpu_ms.size(); ++i) s.cpu_ms[i] = 1000 * (i + 1);
  s.load1_milli = 1500;
  s.mem_total = 8ull << 30;
  s.mem_available = 4ull << 30;
  s.swap_total = 1ull << 30;
  s.disks.push_back({"vda", 10, 20, 4096, 8192, 5});
  s.filesystems.push_back({"/", "/dev/vda1", "ext4", 100ull << 30, 50ull << 30, 45ull << 30, 1000, 500});
  s.nets.push_back({"eth0", 1, 2, 3, 4, 0, 0, 0, 0});
  s.nets.push_back({"lo", 1, 2, 3, 4, 0, 0, 0, 0});
  return v;
}

// Every family locabusd serves at /metrics comes from one of three
// sources; none may render a family another one renders (Prometheus
// refuses a scrape with a family twice).
TEST(MetricsText, RegistryMonitorAndBuildInfoFamiliesNeverCollide) {
  // The registry as a daemon has it: the engine, a transport, the XDP
  // program's group, the API server with every service, the daemon's own
  // group and the exporter's.
  sim::SimCluster cluster(1, 1);
  char tmpl[] = "/tmp/locabus-metrics-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::filesystem::path dir = tmpl;
  Config cfg;
  cfg.iface = "sim";
  cfg.node_id = 1;
  cfg.run_dir = dir;
  cfg.log_level = "warn";
  NoIntrospection introspection;
  CounterGroups groups;
  std::string services_local, services_cluster;
  {
    ServerHooks hooks;
    hooks.monitor_sample = [] { return full_row(1, true).stats; };
    ApiServer server(cfg, cluster.node(0), cluster.net().clock(), introspection, hooks);
    server.do_work();  // LocaMonitor's first sample: this node's row
    cluster.node(0).counters(groups);
    cluster.net().transport(cluster.port_of(0)).counters(groups);
    groups.push_back(fastpath::counter_group(fastpath::CounterValues{}));
    server.counters(groups);
    static constexpr CounterField kIdleSleeps{"idle_sleeps", "a daemon field", CounterKind::counter};
    groups.emplace_back("", "the daemon").add(kIdleSleeps, 0);
    groups.emplace_back("metrics", "the exporter").add(MetricsCounters{});
    server.exposition(false, services_local);
    server.exposition(true, services_cluster);
  }
  std::filesystem::remove_all(dir);

  ASSERT_NE(services_local.find("\nlocabus_node_up{node=\"1\"} 1\n"), std::string::npos)
      << "LocaMonitor's row is not in the services' local exposition:\n"
      << services_local;
  ASSERT_NE(services_cluster.find("\nnode_load1{node=\"1\"} 1.500\n"), std::string::npos) << services_cluster;
  ASSERT_TRUE(
      std::any_of(groups.begin(), groups.end(), [](const CounterGroup& g) { return g.name == "monitor"; }));

  // The rule that keeps them apart: the monitor's families are node_* and
  // locabus_node_*, so no registry group may be "node" or "node.<x>", and
  // no top-level field may start with "node_".
  for (const CounterGroup& g : groups) {
    EXPECT_FALSE(g.name == "node" || g.name.starts_with("node.") || g.name.starts_with("node_")) << g.name;
    if (g.name.empty()) {
      for (const CounterSample& s : g.samples) EXPECT_FALSE(s.name.starts_with("node_")) << s.name;
    }
  }

  const std::string registry = prometheus_text(groups, {{"node", "1"}});
  const std::vector<monitor::NodeView> rows = {full_row(1, true), full_row(2, false)};
  const std::string monitor_text = monitor::node_exposition(rows);
  const std::string build = build_info_text(1, kVersion);

  std::set<std::string> registry_families;
  for (const auto& f : exposition_families(registry)) {
    EXPECT_TRUE(registry_families.insert(f).second) << "the registry repeats " << f;
    EXPECT_TRUE(f.starts_with("locabus_")) << f;
  }
  const auto monitor_families = exposition_families(monitor_text);
  ASSERT_GE(monitor_families.size(), 30u) << "the full row rendered too few families";
  for (const auto& f : monitor_families) {
    EXPECT_TRUE(f.starts_with("node_") || f.starts_with("locabus_node_")) << f;
    EXPECT_FALSE(registry_families.contains(f)) << f << " is the registry's and the monitor's";
  }
  for (const auto& f : exposition_families(build)) EXPECT_FALSE(registry_families.contains(f)) << f;
  for (const std::string* text : {&services_local, &services_cluster})
    for (const auto& f : exposition_families(*text))
      EXPECT_FALSE(registry_families.contains(f)) << f << " is the registry's and a service's";

  // And what the daemon puts together for a local scrape has each family once.
  const std::string local = registry + services_local + build;
  std::set<std::string> seen;
  for (const auto& f : exposition_families(local)) EXPECT_TRUE(seen.insert(f).second) << f << " twice";
}

}  // namespace
}  // namespace locabus::daemon
