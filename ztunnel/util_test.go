package ztunnel

import (
	"strings"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func newIndex(c *meshconfig.Config) *meshconfig.Index { return meshconfig.NewIndex(c) }
