package meshlab

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// agentPort is where every sample agent listens.
const agentPort = 8080

// demoPods are the pods of the demo (and of `up` with two nodes or more).
func demoPods(nodes int) []lab.PodSpec {
	other := min(2, nodes)
	spec := func(name string, node int, enrolled bool) lab.PodSpec {
		return lab.PodSpec{Name: name, Namespace: "agents", ServiceAccount: name, Node: node, Enrolled: enrolled,
			Labels: map[string]string{"app": name}}
	}
	return []lab.PodSpec{
		spec("planner", 1, true),
		spec("billing", 1, true),
		spec("data-validator", other, true),
		spec("legacy-batch", other, false),
	}
}

// startAgents adds the pods, runs `meshlab app http` in each and waits
// until every agent answers.
func startAgents(ctx context.Context, l *lab.Lab, specs []lab.PodSpec) (map[string]*lab.Pod, error) {
	pods := map[string]*lab.Pod{}
	for _, s := range specs {
		p, err := l.AddPod(ctx, s)
		if err != nil {
			return nil, err
		}
		pods[s.Name] = p
		if _, err := p.Start(ctx, "agent", l.Bin("meshlab"), "app", "http", "--name", s.Name,
			"--listen", fmt.Sprintf(":%d", agentPort)); err != nil {
			return nil, err
		}
	}
	for _, p := range pods {
		if err := waitAgent(ctx, p); err != nil {
			return nil, err
		}
	}
	return pods, nil
}

// waitAgent polls the agent on the pod's loopback.
func waitAgent(ctx context.Context, p *lab.Pod) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/", agentPort)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		code, _, err := p.HTTPGet(ctx, url)
		if err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent in pod %s not answering: %v", p.Name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
