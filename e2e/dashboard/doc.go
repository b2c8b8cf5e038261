// Package dashboard tests the managers' dashboard in a real browser
// (Debian's chromium, headless, driven through the DevTools protocol by
// chromedp): against a lab cluster running the demo documents (the chunks
// and task addresses the page shows against what Docker reports, a scale
// change appearing without a reload, a killed host marked, fifty open
// event streams costing Consul nothing, the login of a listener beyond loopback),
// and against a VLAN of 1,000 chunks (every chunk and address in the DOM,
// the first render's time, no horizontal scrolling on a phone's width).
// Screenshots go to the test's artifact directory.
package dashboard
