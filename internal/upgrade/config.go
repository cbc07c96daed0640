package upgrade

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/lifeboat-ha/lifeboat/internal/config"
)

// ConfigChange is one agent config key that a release renamed or removed.
type ConfigChange struct {
	// Key is the old key's path as written in the file, list items as
	// "[]": "aws.proxy", "cluster.nodes[].address".
	Key string
	// NewKey is the key that takes its value from Version on; "" when the
	// key was removed.
	NewKey string
	// Version is the first release without Key.
	Version string
	// Do says what to do with the value.
	Do string
}

// ConfigChanges lists every agent config key a release renamed or removed,
// oldest first. A release that renames or removes a key adds its line here
// in the same change, so that `lifeboat upgrade check` names it at its line
// before the new agent refuses to start. 0.2.0 renamed and removed none.
var ConfigChanges = []ConfigChange{}

// listIndex matches the list indices of a field path ("nodes[1]").
var listIndex = regexp.MustCompile(`\[\d+\]`)

// keyAt is one key of a YAML file with its position.
type keyAt struct {
	path      string
	line, col int
}

// keys lists every mapping key in data with its path (list items as
// "[]"). Malformed YAML gives what could be read.
func keys(data []byte) []keyAt {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return nil
	}
	var out []keyAt
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		if depth > 64 {
			return
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				out = append(out, keyAt{p, k.Line, k.Column})
				walk(n.Content[i+1], p, depth+1)
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path+"[]", depth+1)
			}
		}
	}
	walk(doc.Content[0], "", 0)
	return out
}

func leaf(path string) (parent, name string) {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i], path[i+1:]
	}
	return "", path
}

// CheckConfig reads the agent config at path as version target would: every
// key of changes (renamed or removed by target or earlier) at its line, and
// every problem target's parser reports (an unknown key with file, line and
// column). It returns the config with those keys renamed or dropped, as
// far as that makes it one target accepts, for the rest of the check; cfg is
// nil with an error when it does not.
func CheckConfig(path, target string, changes []ConfigChange) (gaps []Gap, cfg *config.Agent, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read the agent config: %w (use --config with the file the agent runs with)", err)
	}
	type at struct{ line, col int }
	rename := map[at]string{}
	drop := map[at]bool{}
	newKeys := map[string]bool{}
	for _, k := range keys(data) {
		for _, c := range changes {
			if c.Key != k.path || Newer(c.Version, target) {
				continue
			}
			g := Gap{Kind: GapConfig, File: path, Line: k.line, Key: k.path, NewKey: c.NewKey, Removed: c.NewKey == "", Version: c.Version, Fix: c.Do}
			p := at{k.line, k.col}
			oldParent, _ := leaf(c.Key)
			newParent, newName := leaf(c.NewKey)
			switch {
			case c.NewKey == "":
				g.Message = fmt.Sprintf("%s was removed in lifeboat %s", k.path, c.Version)
				drop[p] = true
			default:
				g.Message = fmt.Sprintf("%s was renamed to %s in lifeboat %s", k.path, c.NewKey, c.Version)
				if oldParent == newParent {
					rename[p] = newName
				} else {
					drop[p] = true
				}
			}
			if g.Fix == "" {
				g.Fix = "edit the config before the new agent starts"
			}
			gaps = append(gaps, g)
			if c.NewKey != "" {
				newKeys[c.NewKey] = true
			}
		}
	}
	cfg, err = config.LoadAgent(path)
	if err == nil {
		return gaps, cfg, nil
	}
	var es *config.Errors
	if !errors.As(err, &es) {
		return gaps, nil, err
	}
	for _, e := range es.List {
		p := at{e.Line, e.Column}
		_, renamed := rename[p]
		if renamed || drop[p] || newKeys[listIndex.ReplaceAllString(e.Field, "[]")] {
			continue // the table says more (a new key is missing because the old one is there)
		}
		g := Gap{Kind: GapConfig, File: e.File, Line: e.Line, Key: e.Field, Message: "lifeboat " + target + " rejects it: " + e.Message,
			Fix: "fix it before the new agent starts: it refuses to start with this config"}
		if strings.HasPrefix(e.Message, "unknown key ") {
			g.Fix = "remove the key (or correct its name) before the new agent starts: it refuses to start with a key it does not know"
			drop[p] = true
		}
		gaps = append(gaps, g)
	}
	// The rest of the check needs a config: the one the new version would
	// read once the keys above are dealt with.
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return gaps, nil, errors.New("the agent config cannot be read as YAML: fix it first")
	}
	var fix func(n *yaml.Node, depth int)
	fix = func(n *yaml.Node, depth int) {
		if depth > 64 {
			return
		}
		if n.Kind == yaml.MappingNode {
			var kept []*yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := at{k.Line, k.Column}
				if drop[p] {
					continue
				}
				if nk, ok := rename[p]; ok {
					k.Value = nk
				}
				kept = append(kept, k, v)
			}
			n.Content = kept
		}
		for _, c := range n.Content {
			fix(c, depth+1)
		}
	}
	fix(doc.Content[0], 0)
	fixed, err := yaml.Marshal(&doc)
	if err != nil {
		return gaps, nil, fmt.Errorf("rewrite the agent config for the check: %w", err)
	}
	cfg, err = config.ParseAgent(path, fixed)
	if err != nil {
		return gaps, nil, fmt.Errorf("the rest of the check needs a config lifeboat %s accepts; fix the problems above first", target)
	}
	return gaps, cfg, nil
}
