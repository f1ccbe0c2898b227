# Install Debian's Chromium for the Playwright test in tests/test_dashboard.py,
# which launches /usr/bin/chromium. chromium-driver adds /usr/bin/chromedriver.
# It must run as root, as CI does. It works with `bash .ci/chromium.sh` and with
# `. .ci/chromium.sh`, because it sets no shell options and never exits. Its
# status is apt-get's, or 0 when both programs are already installed.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi
