/* VirtualBox OS types to libosinfo ids, so the imported domain gets the
 * devices and defaults virt-manager and libvirt would pick for that OS.
 * Where VirtualBox names a family without a version (Ubuntu_64), the
 * family's "unknown" entry is used where libosinfo has one, else the
 * generic Linux profile; an OS type missing here gets no id at all. */
#include "vm.h"

static const struct {
    const char *vbox;
    const char *osinfo;
} os_map[] = {
    { "Windows11_64", "http://microsoft.com/win/11" },
    { "Windows10_64", "http://microsoft.com/win/10" },
    { "Windows10", "http://microsoft.com/win/10" },
    { "Windows81_64", "http://microsoft.com/win/8.1" },
    { "Windows81", "http://microsoft.com/win/8.1" },
    { "Windows8_64", "http://microsoft.com/win/8" },
    { "Windows8", "http://microsoft.com/win/8" },
    { "Windows7_64", "http://microsoft.com/win/7" },
    { "Windows7", "http://microsoft.com/win/7" },
    { "WindowsVista_64", "http://microsoft.com/win/vista" },
    { "WindowsVista", "http://microsoft.com/win/vista" },
    { "WindowsXP_64", "http://microsoft.com/win/xp" },
    { "WindowsXP", "http://microsoft.com/win/xp" },
    { "Windows2003_64", "http://microsoft.com/win/2k3" },
    { "Windows2003", "http://microsoft.com/win/2k3" },
    { "Windows2008_64", "http://microsoft.com/win/2k8" },
    { "Windows2008", "http://microsoft.com/win/2k8" },
    { "Windows2012_64", "http://microsoft.com/win/2k12" },
    { "Windows2016_64", "http://microsoft.com/win/2k16" },
    { "Windows2019_64", "http://microsoft.com/win/2k19" },
    { "Windows2022_64", "http://microsoft.com/win/2k22" },
    { "Ubuntu24_LTS_64", "http://ubuntu.com/ubuntu/24.04" },
    { "Ubuntu22_LTS_64", "http://ubuntu.com/ubuntu/22.04" },
    { "Ubuntu20_LTS_64", "http://ubuntu.com/ubuntu/20.04" },
    { "Ubuntu18_LTS_64", "http://ubuntu.com/ubuntu/18.04" },
    { "Debian12_64", "http://debian.org/debian/12" },
    { "Debian11_64", "http://debian.org/debian/11" },
    { "Debian10_64", "http://debian.org/debian/10" },
    { "RedHat9_64", "http://redhat.com/rhel/9.0" },
    { "Fedora_64", "http://fedoraproject.org/fedora/unknown" },
    { "Fedora", "http://fedoraproject.org/fedora/unknown" },
    { "OpenSUSE_64", "http://opensuse.org/opensuse/unknown" },
    { "OpenSUSE", "http://opensuse.org/opensuse/unknown" },
    /* Families without a version: the generic Linux profile. */
    { "Ubuntu_64", "http://libosinfo.org/linux/2022" },
    { "Ubuntu", "http://libosinfo.org/linux/2022" },
    { "Debian_64", "http://libosinfo.org/linux/2022" },
    { "Debian", "http://libosinfo.org/linux/2022" },
    { "ArchLinux_64", "http://libosinfo.org/linux/2022" },
    { "Gentoo_64", "http://libosinfo.org/linux/2022" },
    { "Linux26_64", "http://libosinfo.org/linux/2022" },
    { "Linux26", "http://libosinfo.org/linux/2022" },
    { "Linux_64", "http://libosinfo.org/linux/2022" },
};

/* VMware's guestOS names. */
static const struct {
    const char *vmware;
    const char *osinfo;
} vmware_map[] = {
    { "windows11-64", "http://microsoft.com/win/11" },
    { "windows9-64", "http://microsoft.com/win/10" },
    { "windows9", "http://microsoft.com/win/10" },
    { "windows8-64", "http://microsoft.com/win/8" },
    { "windows7-64", "http://microsoft.com/win/7" },
    { "windows7", "http://microsoft.com/win/7" },
    { "winxppro", "http://microsoft.com/win/xp" },
    { "windows9srv-64", "http://microsoft.com/win/2k16" },
    { "windows2019srv-64", "http://microsoft.com/win/2k19" },
    { "windows2019srvnext-64", "http://microsoft.com/win/2k22" },
    { "debian12-64", "http://debian.org/debian/12" },
    { "debian11-64", "http://debian.org/debian/11" },
    { "debian10-64", "http://debian.org/debian/10" },
    { "rhel9-64", "http://redhat.com/rhel/9.0" },
    { "fedora-64", "http://fedoraproject.org/fedora/unknown" },
    { "opensuse-64", "http://opensuse.org/opensuse/unknown" },
    { "ubuntu-64", "http://libosinfo.org/linux/2022" },
    { "ubuntu", "http://libosinfo.org/linux/2022" },
    { "other5xlinux-64", "http://libosinfo.org/linux/2022" },
    { "other6xlinux-64", "http://libosinfo.org/linux/2022" },
    { "other4xlinux-64", "http://libosinfo.org/linux/2022" },
    /* The same systems as vSphere (and its OVF exports) names them. */
    { "windows9_64Guest", "http://microsoft.com/win/10" },
    { "windows9Server64Guest", "http://microsoft.com/win/2k16" },
    { "windows2019srv_64Guest", "http://microsoft.com/win/2k19" },
    { "windows7Server64Guest", "http://microsoft.com/win/2k8r2" },
    { "windows7_64Guest", "http://microsoft.com/win/7" },
    { "debian11_64Guest", "http://debian.org/debian/11" },
    { "debian10_64Guest", "http://debian.org/debian/10" },
    { "rhel9_64Guest", "http://redhat.com/rhel/9.0" },
    { "ubuntu64Guest", "http://libosinfo.org/linux/2022" },
    { "other5xLinux64Guest", "http://libosinfo.org/linux/2022" },
    { "other4xLinux64Guest", "http://libosinfo.org/linux/2022" },
    { "other3xLinux64Guest", "http://libosinfo.org/linux/2022" },
};

const char *vm_osinfo_from_vmware(const char *guest_os)
{
    if (guest_os == NULL)
        return NULL;
    for (gsize i = 0; i < G_N_ELEMENTS(vmware_map); i++)
        if (g_ascii_strcasecmp(vmware_map[i].vmware, guest_os) == 0)
            return vmware_map[i].osinfo;
    return NULL;
}

const char *vm_osinfo_from_vbox(const char *os_type)
{
    if (os_type == NULL)
        return NULL;
    for (gsize i = 0; i < G_N_ELEMENTS(os_map); i++)
        if (g_str_equal(os_map[i].vbox, os_type))
            return os_map[i].osinfo;
    return NULL;
}
