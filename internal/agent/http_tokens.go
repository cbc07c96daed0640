package agent

import (
	"fmt"
	"net/http"
	"os"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/auth"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

// ReloadTokens reads the API's tokens again: api.token_file when set (a
// bad file keeps the tokens in force and says why), else the token
// derived from the cluster key (the local demo's). Called at start, on
// SIGHUP and by POST /v1/tokens/reload.
func (a *Agent) ReloadTokens() error {
	var set *auth.Set
	if f := a.cfg.API.TokenFile; f != "" {
		if fi, err := os.Stat(f); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("API tokens: %w", &config.FileModeError{Path: f, Field: "api.token_file", Mode: fi.Mode().Perm()})
		}
		var err error
		if set, err = auth.Load(f); err != nil {
			return fmt.Errorf("API tokens: %w", err)
		}
	} else {
		set = auth.Single("derived", auth.Admin, a.apiToken, "derived from the cluster key (no api.token_file: for a local demo only)")
	}
	old := a.tokens.Swap(set)
	if old != nil {
		a.log.Info("API tokens reloaded", "source", set.Source, "tokens", len(set.Tokens()))
		if a.events != nil {
			a.events.Add(events.Event{Kind: "security", Action: "tokens-reload", Message: fmt.Sprintf("API tokens reloaded from %s: %d tokens", set.Source, len(set.Tokens()))})
		}
	}
	return nil
}

// tokenList is the answer of GET /v1/tokens and POST /v1/tokens/reload.
func (a *Agent) tokenList() api.TokenList {
	set := a.tokens.Load()
	out := api.TokenList{Node: a.cfg.Node, Source: set.Source}
	for _, t := range set.Tokens() {
		out.Tokens = append(out.Tokens, api.TokenInfo{Name: t.Name, Role: t.Role.String()})
	}
	return out
}

// handleTokens lists the tokens this agent accepts (names and roles, no
// secrets): GET /v1/tokens.
func (a *Agent) handleTokens(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, a.tokenList())
}

// handleTokensReload reloads the token file: POST /v1/tokens/reload. Each
// agent reads its own file: run it on every node (or send SIGHUP).
func (a *Agent) handleTokensReload(w http.ResponseWriter, r *http.Request) {
	if err := a.ReloadTokens(); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("%w; the tokens in force are unchanged", err))
		return
	}
	a.log.Info("API tokens reloaded on request", "by", a.who(r))
	writeJSON(w, a.tokenList())
}
