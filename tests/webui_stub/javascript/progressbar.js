// Stand-in of the WebUI's javascript/progressbar.js (v1.10.1 names and behaviour, written anew):
// randomId() makes a "task(...)" id; requestProgress polls POST ./internal/progress with
// {id_task, id_live_preview}, draws a .progressDiv > .progress bar just before
// progressbarContainer (percentage, ETA and a one-line textinfo as text), calls onProgress(res)
// on each answer, and removes the bar and calls atEnd() once the task is completed, or was active
// and is no longer, or never became active within inactivityTimeout seconds.

function randomId() {
    const part = () => Math.random().toString(36).slice(2, 7);
    return "task(" + part() + part() + part() + ")";
}

function formatTime(secs) {
    const two = (x) => (x < 10 ? "0" + x : "" + x);
    if (secs > 3600) return two(Math.floor(secs / 3600)) + ":" + two(Math.floor(secs / 60) % 60) + ":" + two(Math.floor(secs) % 60);
    if (secs > 60) return two(Math.floor(secs / 60)) + ":" + two(Math.floor(secs) % 60);
    return Math.floor(secs) + "s";
}

function request(url, data, handler, errorHandler) {
    fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data)})
        .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
        .then(handler, errorHandler);
}

function requestProgress(id_task, progressbarContainer, gallery, atEnd, onProgress, inactivityTimeout = 40) {
    const started = Date.now();
    let wasEverActive = false;
    const parent = progressbarContainer.parentNode;
    const divProgress = document.createElement("div");
    divProgress.className = "progressDiv";
    divProgress.style.display = opts.show_progressbar ? "block" : "none";
    const divInner = document.createElement("div");
    divInner.className = "progress";
    divProgress.appendChild(divInner);
    parent.insertBefore(divProgress, progressbarContainer);

    const finish = function () {
        if (divProgress.parentNode) divProgress.parentNode.removeChild(divProgress);
        if (atEnd) atEnd();
    };

    const poll = function (idLivePreview) {
        request("./internal/progress", {id_task: id_task, id_live_preview: idLivePreview}, function (res) {
            if (res.completed) return finish();
            let text = "";
            divInner.style.width = (res.progress || 0) * 100 + "%";
            if (res.progress > 0) text = ((res.progress || 0) * 100).toFixed(0) + "%";
            if (res.eta) text += " ETA: " + formatTime(res.eta);
            if (res.textinfo && res.textinfo.indexOf("\n") === -1) text = res.textinfo + " " + text;
            divInner.textContent = text;
            if (res.active) wasEverActive = true;
            if (!res.active && wasEverActive) return finish();
            if ((Date.now() - started) / 1000 > inactivityTimeout && !res.queued && !res.active) return finish();
            if (onProgress) onProgress(res);
            setTimeout(() => poll(res.id_live_preview), opts.live_preview_refresh_period || 500);
        }, finish);
    };
    poll(0);
}
