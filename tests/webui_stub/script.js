// Stand-in of the WebUI's script.js: gradioApp(), the root every WebUI script queries.
function gradioApp() {
    const app = document.getElementsByTagName("gradio-app")[0];
    if (!app) return document;
    return app.shadowRoot || app;
}
