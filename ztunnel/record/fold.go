package record

import "sync"

// The agent-protocol label values are the callers' words: each is folded
// to a bounded set so that a caller cannot grow the series without bound.

// a2aMethods are A2A's JSON-RPC methods (A2A specification 0.3).
var a2aMethods = map[string]bool{
	"message/send": true, "message/stream": true, "tasks/get": true, "tasks/cancel": true,
	"tasks/resubscribe": true, "tasks/pushNotificationConfig/set": true,
	"tasks/pushNotificationConfig/get": true, "tasks/pushNotificationConfig/list": true,
	"tasks/pushNotificationConfig/delete": true, "agent/getAuthenticatedExtendedCard": true,
}

// mcpMethods are MCP's JSON-RPC methods (specification 2025-06-18).
var mcpMethods = map[string]bool{
	"initialize": true, "ping": true, "tools/list": true, "tools/call": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true, "prompts/list": true,
	"prompts/get": true, "completion/complete": true, "logging/setLevel": true,
	"sampling/createMessage": true, "elicitation/create": true, "roots/list": true,
	"notifications/initialized": true, "notifications/cancelled": true, "notifications/progress": true,
	"notifications/message": true, "notifications/roots/list_changed": true,
	"notifications/tools/list_changed": true, "notifications/resources/list_changed": true,
	"notifications/resources/updated": true, "notifications/prompts/list_changed": true,
}

func foldA2A(m string) string {
	if m == "" || a2aMethods[m] {
		return m
	}
	return "other"
}

func foldMCP(m string) string {
	if m == "" || mcpMethods[m] {
		return m
	}
	return "other"
}

// maxToolsPerService bounds the mcp_tool values of one destination
// service: the first ones seen keep their names, later ones are "other".
const maxToolsPerService = 64

// toolNames remembers the tool names seen per destination service.
type toolNames struct {
	mu   sync.Mutex
	seen map[string]map[string]bool
}

func (t *toolNames) fold(service, tool string) string {
	if tool == "" {
		return ""
	}
	if len(tool) > 128 {
		return "other"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen == nil {
		t.seen = map[string]map[string]bool{}
	}
	s := t.seen[service]
	if s == nil {
		if len(t.seen) >= 4096 {
			return "other"
		}
		s = map[string]bool{}
		t.seen[service] = s
	}
	if s[tool] {
		return tool
	}
	if len(s) >= maxToolsPerService {
		return "other"
	}
	s[tool] = true
	return tool
}
