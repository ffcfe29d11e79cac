// Renders a Helm chart's templates the way `helm template` does, for the tests: Go's
// text/template (Helm's engine) with the context Helm gives (.Values, .Release, .Chart) and the
// Helm and sprig functions the chart uses (and Helm's `include` of the named templates of every
// file, `_helpers.tpl` among them). Values and Chart.yaml arrive as JSON (the test reads
// the YAML); a template that calls any other function fails to parse, so the chart cannot come to
// depend on something this renderer does not check.
//
// Usage: chart_template <chart-dir> <release> <namespace> <values.json> <chart.json>
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"text/template"
)

func empty(value interface{}) bool {
	if value == nil {
		return true
	}
	v := reflect.ValueOf(value)
	switch v.Kind() {
	case reflect.String, reflect.Map, reflect.Slice, reflect.Array:
		return v.Len() == 0
	case reflect.Bool:
		return !v.Bool()
	case reflect.Float64, reflect.Float32:
		return v.Float() == 0
	case reflect.Int, reflect.Int64, reflect.Int32:
		return v.Int() == 0
	}
	return false
}

func toJSON(value interface{}) (string, error) {
	out, err := json.Marshal(value)
	return string(out), err
}

// JSON is YAML; Helm's toYaml writes block style, which parses to the same values.
func toYAML(value interface{}) (string, error) { return toJSON(value) }

func indent(spaces int, text string) string {
	pad := strings.Repeat(" ", spaces)
	return pad + strings.ReplaceAll(text, "\n", "\n"+pad)
}

func functions() template.FuncMap {
	return template.FuncMap{
		"toJson": toJSON,
		"toYaml": toYAML,
		"quote": func(value interface{}) (string, error) {
			if value == nil {
				return `""`, nil
			}
			return toJSON(fmt.Sprint(value))
		},
		"default": func(fallback interface{}, value ...interface{}) interface{} {
			if len(value) == 0 || empty(value[0]) {
				return fallback
			}
			return value[0]
		},
		"empty": empty,
		"dict": func(pairs ...interface{}) (map[string]interface{}, error) {
			if len(pairs)%2 != 0 {
				return nil, fmt.Errorf("dict needs key/value pairs")
			}
			out := map[string]interface{}{}
			for i := 0; i < len(pairs); i += 2 {
				out[fmt.Sprint(pairs[i])] = pairs[i+1]
			}
			return out, nil
		},
		"indent":  indent,
		"nindent": func(spaces int, text string) string { return "\n" + indent(spaces, text) },
		"required": func(message string, value interface{}) (interface{}, error) {
			if empty(value) {
				return nil, fmt.Errorf("%s", message)
			}
			return value, nil
		},
		"fail": func(message string) (string, error) { return "", fmt.Errorf("%s", message) },
		"list": func(items ...interface{}) []interface{} { return items },
		"set": func(target map[string]interface{}, key string, value interface{}) map[string]interface{} {
			target[key] = value
			return target
		},
	}
}

func readJSON(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	return out, json.Unmarshal(data, &out)
}

func run() error {
	if len(os.Args) != 6 {
		return fmt.Errorf("usage: chart_template <chart-dir> <release> <namespace> <values.json> <chart.json>")
	}
	chartDir, release, namespace := os.Args[1], os.Args[2], os.Args[3]
	values, err := readJSON(os.Args[4])
	if err != nil {
		return fmt.Errorf("values: %w", err)
	}
	chart, err := readJSON(os.Args[5])
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	context := map[string]interface{}{
		"Values":  values,
		"Release": map[string]interface{}{"Name": release, "Namespace": namespace, "Service": "Helm"},
		"Chart": map[string]interface{}{
			"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"],
		},
	}
	paths, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	root := template.New("").Option("missingkey=zero")
	funcs := functions()
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var out strings.Builder
		err := root.ExecuteTemplate(&out, name, data)
		return out.String(), err
	}
	root.Funcs(funcs)
	for _, path := range paths {
		text, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := root.New(filepath.Base(path)).Parse(string(text)); err != nil {
			return err
		}
	}
	for _, path := range paths {
		name := filepath.Base(path)
		if strings.HasPrefix(name, "_") || !strings.HasSuffix(name, ".yaml") {
			continue
		}
		var out strings.Builder
		if err := root.ExecuteTemplate(&out, name, context); err != nil {
			return err
		}
		fmt.Printf("---\n# Source: %s\n%s\n", name, out.String())
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chart_template:", err)
		os.Exit(1)
	}
}
