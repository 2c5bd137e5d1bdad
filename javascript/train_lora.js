// Train LoRA tab: start a run with a task id and keep the tab's live views fresh.
// In the WebUI, requestProgress (progressbar.js) draws the progress bar from /internal/progress;
// everywhere (WebUI and standalone) a timer clicks the tab's hidden refresh buttons while a run or
// a grid is active, so the loss chart, samples and grid arrive without reloading the page.
(function () {
    const ACTIVE = ["queued", "running", "paused"];
    const POLLS = [["train_lora_run_state", "train_lora_poll"], ["train_lora_grid_state", "train_lora_grid_poll"]];
    const PERIOD_MS = 1500;

    function root() {
        if (typeof gradioApp === "function") return gradioApp();
        const app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    function valueOf(id) {
        const box = root().querySelector("#" + id + " textarea, #" + id + " input");
        return box ? box.value : "";
    }

    function tick() {
        for (const [stateId, buttonId] of POLLS) {
            if (ACTIVE.includes(valueOf(stateId))) {
                const button = root().querySelector("#" + buttonId);
                if (button) button.click();
            }
        }
    }

    function taskId() {
        if (typeof randomId === "function") return randomId();
        return "task(train_lora_" + Date.now().toString(36) + ")";
    }

    // Called by Gradio with the Start button's inputs; the first is replaced by a fresh task id.
    window.trainLoraStart = function (...args) {
        args[0] = taskId();
        if (typeof requestProgress === "function") {
            const bar = root().querySelector("#train_lora_progressbar");
            if (bar) requestProgress(args[0], bar, null, function () {});
        }
        return args;
    };

    if (!window.trainLoraPolling) {
        window.trainLoraPolling = setInterval(tick, PERIOD_MS);
    }
})();
