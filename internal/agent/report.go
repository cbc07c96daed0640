package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/report"
	"github.com/lifeboat-ha/lifeboat/internal/timerslack"
)

// Bounds of the support bundle's gathering.
const (
	// reportPeerTimeout bounds one node's answer (its doctor run is
	// bounded by reportDoctorTimeout, the rest is in memory).
	reportPeerTimeout = 45 * time.Second
	// reportDeadPeerTimeout bounds a node the failure detector reports
	// failed or left: it is tried, briefly, in case only gossip is cut.
	reportDeadPeerTimeout = 3 * time.Second
	reportDoctorTimeout   = 30 * time.Second
	// maxDoctorPart, maxConfigPart: the doctor report and the config are
	// small; a larger one is cut and marked.
	maxDoctorPart = 1 << 20
	maxConfigPart = 256 << 10
)

// reportRoutes adds the support bundle's endpoints: the bundle itself,
// gathered from every node, and one node's share of it.
func (a *Agent) reportRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/report", a.handleReport)
	mux.HandleFunc("GET /v1/internal/report", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		a.nodeReportMu.Lock()
		defer a.nodeReportMu.Unlock()
		writeJSON(w, a.nodeReport(r.Context()))
	}))
}

// knownSecrets are the values no part of a bundle may contain, whatever
// the structure around them: the cluster key in every encoding it could be
// written in, the tokens derived from it and the API token in use.
func (a *Agent) knownSecrets() []string {
	key := a.cfg.KeyBytes()
	out := []string{a.apiToken, a.internalToken, strings.TrimSpace(a.cfg.Cluster.Key)}
	if len(key) > 0 {
		out = append(out, base64.StdEncoding.EncodeToString(key), base64.RawStdEncoding.EncodeToString(key),
			base64.URLEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key), hex.EncodeToString(key),
			DeriveToken(key, "lifeboat-api"))
	}
	return out
}

// nodeReport is this node's share of a bundle: version, runtime, event
// history, doctor report, config and recent logs, each redacted and
// bounded.
func (a *Agent) nodeReport(ctx context.Context) report.NodePart {
	red := report.NewRedactor(a.knownSecrets()...)
	part := report.NodePart{Node: a.cfg.Node, Version: Version}
	add := func(f report.File, err error) {
		if err != nil {
			f = report.File{Name: f.Name + ".error", Data: []byte(err.Error() + "\n")}
		}
		f.Data = red.Bytes(f.Data)
		part.Files = append(part.Files, f)
	}
	jsonFile := func(name string, v any, limit int) (report.File, error) {
		b, err := red.JSON(v)
		if err != nil {
			return report.File{Name: name}, fmt.Errorf("%s: %w", name, err)
		}
		return report.Limit(name, b, limit), nil
	}
	add(jsonFile("version.json", a.versionInfo(), report.MaxPart))
	add(jsonFile("runtime.json", a.runtimeInfo(), report.MaxPart))
	add(a.eventsFile(red))
	dctx, cancel := context.WithTimeout(ctx, reportDoctorTimeout)
	doc := a.runDoctor(dctx, "")
	cancel()
	add(jsonFile("doctor.json", doc, maxDoctorPart))
	cfg, err := a.configView()
	if err != nil {
		add(report.File{Name: "config.json"}, err)
	} else {
		add(jsonFile("config.json", cfg, maxConfigPart))
	}
	add(a.logsFile(red), nil)
	return part
}

func (a *Agent) versionInfo() map[string]any {
	exe, _ := os.Executable()
	return map[string]any{
		"node": a.cfg.Node, "version": Version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
		"executable": exe, "supported_level": a.c.SupportedLevel(), "feature_level": a.c.FSM.Level(),
		"started": a.started.UTC().Format(time.RFC3339), "log_level": a.levelName(),
	}
}

func (a *Agent) runtimeInfo() map[string]any {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return map[string]any{
		"goroutines": runtime.NumGoroutine(), "gomaxprocs": runtime.GOMAXPROCS(0), "num_cpu": runtime.NumCPU(),
		"heap_alloc_bytes": ms.HeapAlloc, "heap_inuse_bytes": ms.HeapInuse, "sys_bytes": ms.Sys,
		"total_alloc_bytes": ms.TotalAlloc, "num_gc": ms.NumGC, "gc_pause_total": time.Duration(ms.PauseTotalNs).String(),
		"pid": os.Getpid(), "timer_slack": timerSlackInfo(), "procs": a.procsInfo(),
	}
}

// procsInfo says how the process's Ps are set (see package procs).
func (a *Agent) procsInfo() map[string]any {
	if a.procs == nil {
		return map[string]any{"mode": "as started"}
	}
	now, busy, fixed := a.procs.Procs()
	if fixed {
		return map[string]any{"mode": "fixed (GOMAXPROCS in the environment, or one CPU)", "procs": now}
	}
	return map[string]any{"mode": "1 while idle, more while busy", "procs": now, "busy": busy, "raises": a.procs.Raises()}
}

// timerSlackInfo says the slack the agent runs with (timing.timer_slack)
// and the one its commands get, when different.
func timerSlackInfo() map[string]any {
	cur, err := timerslack.Current()
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	info := map[string]any{"agent": cur.String()}
	if _, started := timerslack.Slack(); started != 0 {
		info["commands"] = started.String()
	}
	return info
}

// eventsFile is the node's history, one JSON object a line, the newest
// that fit in a part.
func (a *Agent) eventsFile(red *report.Redactor) (report.File, error) {
	var buf bytes.Buffer
	for _, e := range a.events.Since(0) {
		v, err := red.Value(e)
		if err != nil {
			return report.File{Name: "events.jsonl"}, err
		}
		b, _ := json.Marshal(v)
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return report.Tail("events.jsonl", buf.Bytes(), report.MaxPart), nil
}

// logsFile is the ring of recent log records, as the log printed them.
func (a *Agent) logsFile(red *report.Redactor) report.File {
	lines, dropped := a.logs.Lines()
	var buf bytes.Buffer
	if dropped > 0 {
		fmt.Fprintf(&buf, "# %d older records dropped (the agent keeps the last %d records, %d bytes at most)\n", dropped, len(lines), a.logs.Size())
	}
	for _, l := range lines {
		buf.WriteString(red.String(l))
	}
	return report.Tail("logs.txt", buf.Bytes(), report.MaxPart)
}

// configView is the agent's config as it runs (defaults applied), under
// the file's own field names. key_file and token_file stay as paths:
// their contents never enter a bundle.
func (a *Agent) configView() (map[string]any, error) {
	b, err := yaml.Marshal(a.cfg)
	if err != nil {
		return nil, fmt.Errorf("config.json: encode the config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("config.json: decode the config: %w", err)
	}
	return m, nil
}

// peerContext bounds the wait for node's part: reportPeerTimeout, and no
// more than reportDeadPeerTimeout once the failure detector reports the
// node failed or gone (a dead machine answers nothing: the wait must
// follow the detector, not a TCP or HTTP default).
func (a *Agent) peerContext(ctx context.Context, node string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, reportPeerTimeout)
	go func() {
		for {
			changed := a.c.MemberChanged()
			if st := a.c.Members()[node].State; st == "failed" || st == "left" {
				select {
				case <-time.After(reportDeadPeerTimeout):
					cancel()
				case <-ctx.Done():
				}
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()
	return ctx, cancel
}

// handleReport gathers the support bundle from every node at once and
// answers with it as a gzipped tar. A node that does not answer is listed
// in the manifest with the error; it never fails the report.
func (a *Agent) handleReport(w http.ResponseWriter, r *http.Request) {
	if r.Context().Value(authKey) == accessInternal {
		writeErr(w, http.StatusForbidden, errors.New("not for internal callers"))
		return
	}
	if !a.reportMu.TryLock() {
		writeErr(w, http.StatusConflict, errors.New("a support bundle is already being gathered on this node: wait for it, then try again"))
		return
	}
	defer a.reportMu.Unlock()
	now := time.Now().UTC()
	by := a.who(r)
	red := report.NewRedactor(a.knownSecrets()...)
	type answer struct {
		entry report.NodeEntry
		part  report.NodePart
	}
	answers := eachMember(a, "", func(m cluster.Member) answer {
		ans := answer{entry: report.NodeEntry{Name: m.Name}}
		var err error
		var members map[string]cluster.MemberStatus
		if m.Name == a.cfg.Node {
			a.nodeReportMu.Lock()
			ans.part = a.nodeReport(r.Context())
			a.nodeReportMu.Unlock()
		} else {
			ctx, cancel := a.peerContext(r.Context(), m.Name)
			err = a.rpc.call(ctx, m.Name, "GET", "/v1/internal/report", nil, &ans.part)
			cancel()
			members = a.c.Members()
			var se *api.StatusError
			if errors.As(err, &se) && se.Code == http.StatusNotFound {
				err = fmt.Errorf("its agent (lifeboat %s) does not serve support bundles: upgrade it, or collect its logs by hand (journalctl -u lifeboat)", orUnknown(members[m.Name].Version))
			}
			if err == nil {
				err = report.CheckPart(ans.part, m.Name)
			}
			if err != nil && members[m.Name].State != "" && members[m.Name].State != "alive" {
				err = fmt.Errorf("%w (the failure detector reports it %s)", err, members[m.Name].State)
			}
		}
		if err != nil {
			ans.entry.Error = red.String(err.Error())
			ans.part = report.NodePart{}
			return ans
		}
		ans.entry.Reached, ans.entry.Version = true, ans.part.Version
		return ans
	})
	clusterID := a.tls.ClusterID()
	clusterID = strings.ReplaceAll(clusterID, ":", "")
	if len(clusterID) > 8 {
		clusterID = strings.ToLower(clusterID[:8])
	}
	m := report.Manifest{Created: now, RequestedBy: by, Node: a.cfg.Node, Version: Version, Cluster: clusterID,
		Dir: "lifeboat-report-" + clusterID + "-" + now.Format("20060102T150405Z")}
	var files []report.File
	jsonFile := func(name string, v any) {
		b, err := red.JSON(v)
		if err != nil {
			files = append(files, report.File{Name: name + ".error", Data: []byte(err.Error() + "\n")})
			return
		}
		files = append(files, report.Limit(name, b, report.MaxPart))
	}
	jsonFile("status.json", a.status())
	jsonFile("state.json", a.c.FSM.Copy())
	for _, ans := range answers {
		m.Nodes = append(m.Nodes, ans.entry)
		for _, f := range ans.part.Files {
			f.Name = "nodes/" + ans.entry.Name + "/" + f.Name
			files = append(files, f)
		}
	}
	for i := range files {
		// The last pass: this node's own secrets, in every part whatever
		// its origin (a peer redacts with its own, which may differ).
		files[i].Data = red.Bytes(files[i].Data)
	}
	var buf bytes.Buffer
	m, err := report.Write(&buf, m, files)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	var unreached []string
	for _, n := range m.Unreached() {
		unreached = append(unreached, n.Name+": "+n.Error)
	}
	msg := fmt.Sprintf("support bundle %s: %d files, %d bytes; %d of %d nodes reached", m.Dir, len(m.Files), buf.Len(), len(m.Nodes)-len(unreached), len(m.Nodes))
	if len(unreached) > 0 {
		msg += "; unreachable: " + strings.Join(unreached, "; ")
	}
	a.log.Info("support bundle", "dir", m.Dir, "files", len(m.Files), "bytes", buf.Len(), "unreachable", len(unreached), "by", by)
	a.events.Add(events.Event{Kind: "cluster", Action: "report", Message: msg, By: by})
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", m.Dir+".tar.gz"))
	_, _ = w.Write(buf.Bytes())
}
