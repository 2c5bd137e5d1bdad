// Train LoRA tab: start a run with a task id, keep the tab's live views fresh, remember the form.
// In the WebUI, requestProgress (progressbar.js) draws the progress bar from /internal/progress;
// everywhere (WebUI and standalone) a timer clicks the tab's hidden refresh button while a run is
// active, so the loss chart and samples arrive without reloading the page (the other jobs, grids
// included: train_lora_data.js).
(function () {
    const ACTIVE = ["queued", "running", "paused"];
    const POLLS = [["train_lora_run_state", "train_lora_poll"]];
    const PERIOD_MS = 1500;
    // The form is saved as a whole by one hidden button, a moment after the user stops editing:
    // one request per pause instead of one per field and keystroke.
    const FORM_AREAS = ["#train_lora_basic_options", "#train_lora_advanced_options", "#train_lora_dataset_dir"];
    const SAVE_DELAY_MS = 700;
    let saveTimer = null;

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

    function saveForm() {
        saveTimer = null;
        const button = root().querySelector("#train_lora_form_save");
        if (button) button.click();
    }

    function onEdit(event) {
        // composedPath()[0]: the element really edited, also when Gradio renders into a shadow root
        const target = event.composedPath ? event.composedPath()[0] : event.target;
        if (!target || !target.closest || !FORM_AREAS.some((area) => target.closest(area))) return;
        clearTimeout(saveTimer);
        saveTimer = setTimeout(saveForm, SAVE_DELAY_MS);
    }

    // Called by Gradio with the Start button's inputs; the first is replaced by a fresh task id.
    // shared with train_lora_data.js (the dataset and tagging jobs), looked up there when used
    window.trainLoraDom = {root, valueOf, taskId};

    window.trainLoraStart = function (...args) {
        args[0] = taskId();
        if (typeof requestProgress === "function") {
            const bar = root().querySelector("#train_lora_progressbar");
            if (bar) requestProgress(args[0], bar, null, function () {});
        }
        return args;
    };

    // "Send epochs to X/Y/Z plot": the server filled the hidden infotext; the hidden paste button is
    // registered with the WebUI's infotext paste (as its own "Send to txt2img"), which fills txt2img's
    // prompt and the X/Y/Z plot's fields and switches to the txt2img tab. Empty means it failed.
    window.trainLoraPasteToTxt2img = function () {
        const button = root().querySelector("#train_lora_try_xyz_paste");
        if (button && valueOf("train_lora_try_infotext")) button.click();
        return [];
    };

    if (!window.trainLoraPolling) {
        window.trainLoraPolling = setInterval(tick, PERIOD_MS);
        // dropdown choices are picked with the mouse and fire no input event: mouseup covers them
        for (const type of ["input", "change", "mouseup", "keyup"]) {
            document.addEventListener(type, onEdit, true);
        }
        document.addEventListener("visibilitychange", function () {
            if (document.visibilityState === "hidden" && saveTimer) {
                clearTimeout(saveTimer);
                saveForm();
            }
        });
    }
})();
