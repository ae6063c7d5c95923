// Command validate checks the deployment files against the real schemas, which
// the repository's own tests (internal/systemtest/deploy_test.go) cannot import
// without adding Kubernetes and Compose to the server's dependencies:
//
//   - every manifest in deploy/kubernetes decodes strictly into its
//     Kubernetes API type, so a misspelt or misplaced field is an error
//     instead of being silently dropped by the API server;
//   - docker-compose.yml loads through compose-go, the library Docker Compose
//     itself uses: schema validation, interpolation and normalisation.
//
// It is its own module so that those dependencies stay out of agentapi's.
// Run it from this directory:
//
//	go run . ../..
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	yamlv3 "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run . REPO_ROOT")
		os.Exit(2)
	}
	root := os.Args[1]
	err := errors.Join(checkKubernetes(root), checkCompose(root))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// newObject returns the API type a manifest's kind decodes into.
func newObject(kind string) (any, bool) {
	switch kind {
	case "Deployment":
		return &appsv1.Deployment{}, true
	case "Service":
		return &corev1.Service{}, true
	case "ConfigMap":
		return &corev1.ConfigMap{}, true
	case "Secret":
		return &corev1.Secret{}, true
	case "ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "Namespace":
		return &corev1.Namespace{}, true
	case "PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	}
	return nil, false
}

func checkKubernetes(root string) error {
	files, err := filepath.Glob(filepath.Join(root, "deploy", "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("kubernetes: no manifests found (%v)", err)
	}
	var errs []error
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dec := yamlv3.NewDecoder(bytes.NewReader(b))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f, err))
				break
			}
			kind, _ := doc["kind"].(string)
			obj, ok := newObject(kind)
			if !ok {
				errs = append(errs, fmt.Errorf("%s: kind %q has no type here; add it to newObject", f, kind))
				continue
			}
			raw, err := yamlv3.Marshal(doc)
			if err != nil {
				return err
			}
			if err := yaml.UnmarshalStrict(raw, obj); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %w", f, kind, err))
				continue
			}
			fmt.Printf("ok  %s %s\n", filepath.Base(f), kind)
		}
	}
	return errors.Join(errs...)
}

func checkCompose(root string) error {
	file := filepath.Join(root, "docker-compose.yml")
	// Placeholders for the values .env must provide; never real secrets.
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(root),
		cli.WithEnv([]string{"SECRET_KEY=placeholder", "OPENAI_API_KEY=placeholder", "POSTGRES_PASSWORD=placeholder"}),
	)
	if err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	fmt.Printf("ok  docker-compose.yml services %v\n", p.ServiceNames())
	return nil
}
