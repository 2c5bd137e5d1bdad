// Stand-in of the WebUI's javascript/ui.js: `opts`, the browser's copy of the settings that
// progressbar.js reads (defaults of v1.10.1).
var opts = {show_progressbar: true, show_progress_in_title: true, live_previews_enable: true,
    live_preview_refresh_period: 500};
