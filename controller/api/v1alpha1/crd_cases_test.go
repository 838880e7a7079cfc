package v1alpha1_test

// crdCases are AgentPolicy specs and what the apiserver must say about
// them: wantErr nil means accepted, else every substring must be in the
// error. Names are the object names, so they must be DNS labels.
var crdCases = []struct {
	name    string
	spec    string
	wantErr []string
}{
	{name: "valid-allow", spec: `{"podSelector": {"matchLabels": {"app": "db"}}, "action": "Allow", "rules": [
		{"from": [{"serviceAccounts": ["web", "tools/agent"]}, {"namespaces": ["ops"], "podSelector": {}},
		          {"namespaceSelector": {"matchLabels": {"team": "a"}}},
		          {"ipBlocks": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}, {"cidr": "fd00::/64"}]}],
		 "ports": [{"port": 8080}, {"port": 9000, "endPort": 9010, "protocol": "TCP"}],
		 "http": {"methods": ["GET"], "paths": ["/api/*"]}, "jsonrpc": {"methods": ["tools/call"]}, "mcp": {"tools": ["search"]}}]}`},
	{name: "valid-deny-ports", spec: `{"podSelector": {}, "action": "Deny", "rules": [{"ports": [{"port": 22}]}]}`},
	{name: "valid-allow-empty-rule", spec: `{"podSelector": {}, "action": "Allow", "rules": [{}]}`},
	{name: "valid-allow-no-rules", spec: `{"podSelector": {}, "action": "Allow"}`},
	{name: "bad-action", spec: `{"podSelector": {}, "action": "Maybe"}`,
		wantErr: []string{"spec.action", `Unsupported value: "Maybe"`, `"Allow"`, `"Deny"`}},
	{name: "missing-action", spec: `{"podSelector": {}}`,
		wantErr: []string{"spec.action", "Required value"}},
	{name: "bad-cidr", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"from": [{"ipBlocks": [{"cidr": "10.0.0.300/8"}]}]}]}`,
		wantErr: []string{"cidr must be an IP prefix such as 10.0.0.0/8"}},
	{name: "cidr-without-length", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"from": [{"ipBlocks": [{"cidr": "10.0.0.1"}]}]}]}`,
		wantErr: []string{"cidr must be an IP prefix"}},
	{name: "bad-except", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"from": [{"ipBlocks": [{"cidr": "10.0.0.0/8", "except": ["nope"]}]}]}]}`,
		wantErr: []string{"except must be an IP prefix"}},
	{name: "except-outside", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"from": [{"ipBlocks": [{"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}]}]}]}`,
		wantErr: []string{"every except must lie within cidr"}},
	{name: "deny-empty-rule", spec: `{"podSelector": {}, "action": "Deny", "rules": [{}]}`,
		wantErr: []string{"spec.rules: Invalid value", "a Deny rule needs from or ports", "would deny every connection"}},
	{name: "deny-l7-only-rule", spec: `{"podSelector": {}, "action": "Deny", "rules": [{"http": {"methods": ["DELETE"]}}]}`,
		wantErr: []string{"a Deny rule needs from or ports"}},
	{name: "empty-from-entry", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"from": [{}]}]}`,
		wantErr: []string{"a from entry must set at least one of serviceAccounts"}},
	{name: "port-zero", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"ports": [{"port": 0}]}]}`,
		wantErr: []string{"spec.rules[0].ports[0].port", "should be greater than or equal to 1"}},
	{name: "port-70000", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"ports": [{"port": 70000}]}]}`,
		wantErr: []string{"spec.rules[0].ports[0].port", "should be less than or equal to 65535"}},
	{name: "endport-below-port", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"ports": [{"port": 9000, "endPort": 8000}]}]}`,
		wantErr: []string{"endPort must be greater than or equal to port"}},
	{name: "udp", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}`,
		wantErr: []string{`Unsupported value: "UDP"`}},
	{name: "bad-service-account", spec: `{"podSelector": {}, "action": "Allow", "rules": [{"from": [{"serviceAccounts": ["a/b/c"]}]}]}`,
		wantErr: []string{"serviceAccounts[0]", "should match"}},
}
