package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pulsarFromEnv returns the Pulsar that make test started (PDS_TEST_PULSAR_URL, PDS_TEST_PULSAR_ADMIN_URL),
// skipping the test when there is none.
func pulsarFromEnv(t *testing.T) (serviceURL, adminURL string) {
	t.Helper()
	serviceURL, adminURL = os.Getenv("PDS_TEST_PULSAR_URL"), os.Getenv("PDS_TEST_PULSAR_ADMIN_URL")
	if serviceURL == "" || adminURL == "" {
		t.Skip("needs a real Pulsar: set PDS_TEST_PULSAR_URL and PDS_TEST_PULSAR_ADMIN_URL (make test does, through deploy/scripts/with-pulsar.sh)")
	}
	return serviceURL, adminURL
}

// pulsarBroker makes the data planes use the Pulsar at serviceURL/adminURL. The topics a cluster creates
// are deleted from that Pulsar when the test ends, after the PDS processes stopped.
func pulsarBroker(serviceURL, adminURL string) brokerSetup {
	return brokerSetup{
		args: []string{"--broker", "pulsar", "--pulsar-url", serviceURL, "--pulsar-admin-url", adminURL},
		prepare: func(c *cluster) {
			c.t.Cleanup(func() {
				for _, id := range c.topicIDs {
					if err := deletePulsarTopics(adminURL, id); err != nil {
						c.t.Errorf("clean up Pulsar topic of PDS topic %s: %v", id, err)
					}
				}
			})
		},
	}
}

// pulsarAdminCall calls Pulsar's admin REST API and decodes a JSON answer into out (when not nil).
func pulsarAdminCall(method, adminURL, path string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(adminURL, "/")+path, nil)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: decode %s: %w", method, path, body, err)
		}
	}
	return nil
}

// findPulsarTopics returns the partitioned topics ("persistent://tenant/namespace/name") whose name contains
// id, a PDS topic's UUID, in any tenant and namespace: drivers derive Pulsar names from it.
func findPulsarTopics(adminURL, id string) ([]string, error) {
	var tenants []string
	if err := pulsarAdminCall(http.MethodGet, adminURL, "/admin/v2/tenants", &tenants); err != nil {
		return nil, err
	}
	var found []string
	for _, tenant := range tenants {
		var namespaces []string
		if err := pulsarAdminCall(http.MethodGet, adminURL, "/admin/v2/namespaces/"+url.PathEscape(tenant), &namespaces); err != nil {
			return nil, err
		}
		for _, ns := range namespaces {
			var topics []string
			if err := pulsarAdminCall(http.MethodGet, adminURL, "/admin/v2/persistent/"+ns+"/partitioned", &topics); err != nil {
				return nil, err
			}
			for _, topic := range topics {
				if strings.Contains(topic, id) {
					found = append(found, topic)
				}
			}
		}
	}
	return found, nil
}

// pulsarPartitions returns the partition count Pulsar holds for PDS topic id.
func pulsarPartitions(adminURL, id string) (int, error) {
	topics, err := findPulsarTopics(adminURL, id)
	if err != nil {
		return 0, err
	}
	if len(topics) != 1 {
		return 0, fmt.Errorf("want one partitioned Pulsar topic named after PDS topic %s, found %q", id, topics)
	}
	var meta struct {
		Partitions int `json:"partitions"`
	}
	path := "/admin/v2/persistent/" + strings.TrimPrefix(topics[0], "persistent://") + "/partitions"
	if err := pulsarAdminCall(http.MethodGet, adminURL, path, &meta); err != nil {
		return 0, err
	}
	return meta.Partitions, nil
}

// logPulsarSubscriptionStats logs what Pulsar holds for the subscriptions of PDS topic id, partition by
// partition (backlog, consumers with their unacknowledged records and draining hashes, records waiting for
// redelivery): when events went missing, it tells whether Pulsar still holds them and for which consumer.
func logPulsarSubscriptionStats(t *testing.T, adminURL, id string) {
	t.Helper()
	topics, err := findPulsarTopics(adminURL, id)
	if err != nil {
		t.Logf("Pulsar stats of PDS topic %s: %v", id, err)
		return
	}
	for _, topic := range topics {
		var stats struct {
			Partitions map[string]struct {
				Subscriptions map[string]json.RawMessage `json:"subscriptions"`
			} `json:"partitions"`
		}
		path := "/admin/v2/persistent/" + strings.TrimPrefix(topic, "persistent://") + "/partitioned-stats?perPartition=true"
		if err := pulsarAdminCall(http.MethodGet, adminURL, path, &stats); err != nil {
			t.Logf("Pulsar stats of %s: %v", topic, err)
			continue
		}
		for partition, p := range stats.Partitions {
			for name, sub := range p.Subscriptions {
				t.Logf("Pulsar stats of %s, subscription %s: %s", partition, name, sub)
			}
		}
	}
}

// deletePulsarTopics force-deletes the partitioned topics of PDS topic id, with their subscriptions.
func deletePulsarTopics(adminURL, id string) error {
	topics, err := findPulsarTopics(adminURL, id)
	if err != nil {
		return err
	}
	for _, topic := range topics {
		path := "/admin/v2/persistent/" + strings.TrimPrefix(topic, "persistent://") + "/partitions?force=true"
		if err := pulsarAdminCall(http.MethodDelete, adminURL, path, nil); err != nil {
			return err
		}
	}
	return nil
}

// pulsarScriptTimeout bounds one start or stop through pulsar.sh (a cold start takes 20–40 s; the script
// gives up on its own after PDS_PULSAR_START_TIMEOUT, default 240 s).
const pulsarScriptTimeout = 5 * time.Minute

// ownPulsar is a Pulsar standalone instance this test alone uses, run by deploy/scripts/pulsar.sh, so the
// test may stop and restart it.
type ownPulsar struct {
	t                               *testing.T
	script, dir                     string
	brokerPort, webPort, bookiePort string
	serviceURL, adminURL            string
}

// startOwnPulsar starts a Pulsar instance with its data in a temporary directory; it is stopped when the
// test ends.
func startOwnPulsar(t *testing.T) *ownPulsar {
	t.Helper()
	script := os.Getenv("PDS_PULSAR_SCRIPT")
	if script == "" {
		var err error
		if script, err = filepath.Abs("../deploy/scripts/pulsar.sh"); err != nil {
			t.Fatalf("locate pulsar.sh: %v", err)
		}
	}
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("this test runs its own Pulsar through %s: %v", script, err)
	}
	port := func() string {
		_, p, err := net.SplitHostPort(freeAddr(t))
		if err != nil {
			t.Fatalf("pick a port for the test's Pulsar: %v", err)
		}
		return p
	}
	// Free ports rather than fixed ones: several test runs (or make test's own Pulsar) may share the machine.
	p := &ownPulsar{t: t, script: script, dir: filepath.Join(t.TempDir(), "pulsar"), brokerPort: port(), webPort: port(), bookiePort: port()}
	p.serviceURL = "pulsar://127.0.0.1:" + p.brokerPort
	p.adminURL = "http://127.0.0.1:" + p.webPort
	// Registered before the start, so a start that fails halfway is cleaned up too; stop is idempotent.
	t.Cleanup(func() {
		if err := p.run("stop", p.dir); err != nil {
			t.Errorf("stop the test's Pulsar: %v", err)
		}
	})
	p.start()
	return p
}

// start starts (or restarts, keeping its data) the instance and returns once it answers.
func (p *ownPulsar) start() {
	p.t.Helper()
	if err := p.run("start", p.dir, "--broker-port", p.brokerPort, "--web-port", p.webPort, "--bookie-port", p.bookiePort); err != nil {
		p.t.Fatalf("start the test's Pulsar: %v", err)
	}
}

// stop stops the instance gracefully and returns once it is gone.
func (p *ownPulsar) stop() {
	p.t.Helper()
	if err := p.run("stop", p.dir); err != nil {
		p.t.Fatalf("stop the test's Pulsar: %v", err)
	}
}

func (p *ownPulsar) run(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), pulsarScriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.script, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", p.script, strings.Join(args, " "), err, out)
	}
	return nil
}
