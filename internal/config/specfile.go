package config

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// specFile is the list form of a spec file.
type specFile struct {
	Hierarchies []spec.Hierarchy `yaml:"hierarchies"`
}

// ParseSpec parses a `lifeboat apply` spec file: either a mapping with a
// `hierarchies:` list, or a single hierarchy document. JSON is accepted too.
// validate (kit.ValidateHierarchy in the agent; Hierarchy.Validate(nil) when
// nil) runs on each hierarchy before defaults are filled, so that defaults
// cannot hide a mistake; its problems are reported at their lines. The
// hierarchies are returned normalized.
func ParseSpec(name string, data []byte, validate func(*spec.Hierarchy) []spec.Problem) ([]spec.Hierarchy, error) {
	if validate == nil {
		validate = func(h *spec.Hierarchy) []spec.Problem { return h.Validate(nil) }
	}
	w := newWalker(name)
	root := w.document(data)
	if root == nil {
		if len(w.errs) == 0 {
			w.add(pos{}, "", "the file is empty: expected \"hierarchies:\" with a list of hierarchies, or one hierarchy (name:, nodes:, resources:)")
		}
		return nil, w.result()
	}
	var hs []spec.Hierarchy
	prefix := func(int) string { return "" }
	if hasKey(root, "hierarchies") {
		var f specFile
		if !w.decode(root, &f) {
			return nil, w.result()
		}
		hs = f.Hierarchies
		prefix = func(i int) string { return fmt.Sprintf("hierarchies[%d].", i) }
		if len(hs) == 0 {
			w.problem("hierarchies", "the list is empty: add at least one hierarchy")
		}
	} else {
		var h spec.Hierarchy
		if !w.decode(root, &h, "hierarchies") {
			return nil, w.result()
		}
		hs = []spec.Hierarchy{h}
	}
	names := map[string]int{}
	for i := range hs {
		h := &hs[i]
		for _, p := range validate(h) {
			w.problem(prefix(i)+p.Field, p.Message)
		}
		if h.Name == "" {
			continue
		}
		if j, dup := names[h.Name]; dup {
			w.problem(prefix(i)+"name", fmt.Sprintf("hierarchy %q is defined twice (also hierarchies[%d]): names must be unique", h.Name, j))
		} else {
			names[h.Name] = i
		}
	}
	if err := w.result(); err != nil {
		return nil, err
	}
	for i := range hs {
		hs[i].Normalize()
	}
	return hs, nil
}

func hasKey(n *yaml.Node, key string) bool {
	if n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			return true
		}
	}
	return false
}
